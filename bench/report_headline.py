"""The report's headline: per task, the LSNN against each recurrent baseline benched on it (the LSTM,
the GRU) on accuracy, latency per target, energy and memory, as ratios, with the training budget of
each checkpoint; and one sentence saying what was found."""
from __future__ import annotations

from .report_tables import (BASELINES, Cell, Table, exact, first_run, instructions_cell, label, latency_cell,
                            reference_accuracy_cell, runtimes)


def pairs(results: dict) -> list[tuple[str, dict, list[dict]]]:
    """(task, LSNN, its baselines) for every task that has an LSNN and at least one baseline, in task
    order; the baselines in :data:`BASELINES` order (the first model of each kind)."""
    out = []
    for task in sorted({m["task"] for m in results["models"]}):
        of = {kind: next((m for m in results["models"] if m["task"] == task and m["kind"] == kind), None)
              for kind in ("lsnn", *BASELINES)}
        baselines = [of[kind] for kind in BASELINES if of[kind]]
        if of["lsnn"] and baselines:
            out.append((task, of["lsnn"], baselines))
    return out


def _ratio(a: Cell, b: Cell) -> Cell:
    if a.value is None or b.value is None or b.value == 0:
        return label("-")
    r = a.value / b.value
    return Cell(f"{r:.3g}x", r)


def _figures(results: dict, m: dict) -> list[tuple[str, Cell]]:
    """(figure, cell) of one model, in the headline's order."""
    b1 = min(results["config"]["batch_sizes"])
    threads = results["config"]["threads"][0]
    metric = "MSE" if m.get("metric") == "mse" else "accuracy"
    rows = [(f"{metric} (reference runtime)", reference_accuracy_cell(m))]
    for rt in runtimes(results):
        run = first_run(results, m["name"], rt, b1)
        rows.append((f"latency {rt}, batch {b1}, {threads} thread(s)",
                     latency_cell(run) if run else label("-")))
    for r in results.get("microcontrollers") or []:
        if r["model"] == m["name"]:
            rows.append((f"instructions/step {r['core']}", instructions_cell(r)))
    energy = m["energy_uj_per_inference"]
    rows.append(("energy per inference (uJ)", exact(energy, f"{energy:.3f}")))
    rows.append(("weights (KiB)", exact(m["weight_bytes"], f"{m['weight_bytes'] / 1024:.1f}")))
    for r in results.get("microcontrollers") or []:
        if r["model"] == m["name"]:
            rows.append((f"RAM {r['core']} (KiB)", exact(r["ram_bytes"], f"{r['ram_bytes'] / 1024:.1f}")))
    pw = m.get("peak_working_memory_bytes", {}).get("cpu")
    if pw:
        rows.append((f"peak working memory cpu, batch {pw['batch']} (MiB)", Cell(f"{pw['bytes'] / 2**20:.1f}",
                                                                                 pw["bytes"] / 2**20)))
    return rows + (_budget_rows(m) if "training" in m else [])


def _budget_rows(m: dict) -> list[tuple[str, Cell]]:
    """The checkpoint's training budget, one figure a row ('-' where metrics.json lacks it)."""
    b = m.get("training", {})
    t = b.get("train_seconds")
    def count(key: str) -> Cell:
        return label("-") if b.get(key) is None else Cell(f"{b[key]:,}", b[key])
    return [("training steps", count("steps")), ("training batch size", count("batch_size")),
            ("training samples seen", count("samples_seen")),
            ("training time (min)", label("-") if t is None else Cell(f"{t / 60:.1f}", t / 60)),
            ("training processes x threads", label(f"{b.get('processes', '-')} x {b.get('threads', '-')}"))]


#: the figures (by first word) the headline's sentence gives the ratio of
SAID = ("latency", "energy", "weights")


def _sentence(task: str, lsnn: dict, baselines: list[dict], rows: list[list[Cell]]) -> str:
    """What the table says, in words: the metric, then each ratio (rows: figure, LSNN, then each
    baseline's figure and the LSNN's ratio to it)."""
    acc = rows[0]
    against = " and ".join(f"the {BASELINES[b['kind']]} {b['name']}'s {acc[2 + 2 * k].text}"
                           for k, b in enumerate(baselines))
    said = f"On {task}, the LSNN {lsnn['name']} scores {acc[1].text} against {against} ({acc[0].text.split(' ')[0]})"
    for k, b in enumerate(baselines):
        ratios = [f"{row[0].text}: {row[3 + 2 * k].text}" for row in rows[1:]
                  if row[3 + 2 * k].value is not None and row[0].text.split(" ")[0] in SAID]
        said += f"; LSNN / {BASELINES[b['kind']]}: " + ", ".join(ratios)
    return said + "."


def _get(figures: dict[str, Cell], figure: str) -> Cell:
    return figures.get(figure, label("-"))


def headline(results: dict) -> list[Table]:
    """One table per task that has an LSNN and a baseline: figure | LSNN | then per baseline (LSTM,
    GRU) its figure | LSNN / it."""
    out = []
    for task, lsnn, baselines in pairs(results):
        a = dict(_figures(results, lsnn))
        bs = [dict(_figures(results, b)) for b in baselines]
        rows = [[label(f), _get(a, f), *(c for b in bs for c in (_get(b, f), _ratio(_get(a, f), _get(b, f))))]
                for f in dict.fromkeys([*a, *(f for b in bs for f in b)])]
        names = [BASELINES[b["kind"]] for b in baselines]
        columns = ["figure", f"LSNN {lsnn['name']}",
                   *(c for n, b in zip(names, baselines) for c in (f"{n} {b['name']}", f"LSNN / {n}"))]
        t = Table(f"headline-{task}", f"Headline: {task}", _sentence(task, lsnn, baselines, rows), columns,
                  rows, defines=("accuracy", "latency", "energy", "memory", "microcontrollers", "training budget"))
        out.append(t)
    return out
