"""The bench report's tables as data: each a title, a note on what its rows hold, the definitions it
uses, and rows of cells (the text shown and the figure behind it, which a baseline is compared with
and a browser sorts on). ``report.md`` and ``report.html`` render the same tables."""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from .harness import __doc__ as HARNESS_DOC

LOWER, HIGHER = "lower", "higher"  # which way a figure is better
#: the model kinds the LSNN is compared with (the recurrent baselines), in the report's order, and how
#: the report names them
BASELINES = {"lstm": "LSTM", "gru": "GRU"}


@dataclass(frozen=True)
class Cell:
    """``text`` as shown; ``value`` the figure (None: a label); ``better`` LOWER or HIGHER when a change
    the other way is a regression (None: not judged); ``noise`` the figure's relative run-to-run noise
    (0: an exact count; None: not measured, so never flagged); ``of`` names the measurement when several
    tables show it (a baseline comparison counts it once)."""
    text: str
    value: float | None = None
    better: str | None = None
    noise: float | None = None
    of: tuple | None = None


def label(x) -> Cell:
    return Cell(str(x))


@dataclass
class Table:
    id: str
    title: str
    note: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    keys: int = 1  # the first ``keys`` cells of a row name it (to find the same row in a baseline)
    defines: tuple[str, ...] = ()  # terms of :func:`definitions` its figures follow

    def row_key(self, row: list[Cell]) -> tuple[str, ...]:
        return tuple(c.text for c in row[:self.keys])


# -- definitions -----------------------------------------------------------------------------------

def definitions(results: dict) -> dict[str, str]:
    """The harness's definitions (its docstring's bullets) by term, each text continuing its term
    (``": ..."``), the energy constants added to ``energy``."""
    part = HARNESS_DOC.split("Definitions (also written into the report):", 1)[1]
    out = {}
    for bullet in re.split(r"\n\* ", "\n" + part.strip())[1:]:
        text = " ".join(bullet.split()).rstrip(";.") + "."
        term = re.match(r"[a-z ]+", text).group(0).strip()
        out[term] = text[len(term):]  # ": ..." or " (...): ..."
    cfg = results["config"]
    out["energy"] += (f" Energy constants: E_AC = {cfg['e_ac_pj']} pJ, E_MAC = {cfg['e_mac_pj']} pJ. "
                      f"Source: {results['energy_source']}.")
    out["training budget"] = (": what the checkpoint's metrics.json records: optimizer steps, "
                              "batch size, samples seen, training wall time, processes and threads; "
                              "'-' where the checkpoint does not record it.")
    return out


# -- formatting ------------------------------------------------------------------------------------

def fmt_s(x: float) -> str:
    return f"{x * 1e3:.3f} ms" if x >= 1e-3 else f"{x * 1e6:.1f} us"


def _dash(x, fmt: str = "{}") -> str:
    return "-" if x is None else fmt.format(x)


def accuracy_cell(m: dict, x: float | None, runtime: str) -> Cell:
    """A model's metric on ``runtime``: accuracy (higher is better) or, for regression, MSE (lower is
    better); the same examples every run, so exact."""
    if x is None:
        return label("-")
    return Cell(f"{x:.4f}", x, LOWER if m.get("metric") == "mse" else HIGHER, 0.0, ("metric", m["name"], runtime))


def reference_accuracy_cell(m: dict) -> Cell:
    """The model's metric on the reference runtime, else on the first runtime that measured it."""
    runtime = "torch" if "torch" in m["accuracy"] else next(iter(m["accuracy"]), None)
    return accuracy_cell(m, m["accuracy"].get(runtime), runtime)


def exact(x: float, text: str, better: str | None = LOWER) -> Cell:
    """A count that the same model gives every run (bytes, instructions, synaptic operations)."""
    return Cell(text, float(x), better, 0.0)


def spread(stats: dict) -> float:
    """Relative run-to-run noise of a timing: its p10-p90 range over its median."""
    return (stats["p90"] - stats["p10"]) / stats["median"] if stats["median"] else 0.0


def latency_cell(run: dict, key: str = "latency_per_sequence_s", text: str | None = None,
                 better: str | None = LOWER) -> Cell:
    """A run's timing ``key`` (median), its noise the spread of its repeats (none measured from one)."""
    stats = run[key]
    noise = spread(stats) if run.get("repeats", 2) >= 2 else None
    of = (key, run["model"], run["runtime"], run["batch"], run["threads"])
    return Cell(text or fmt_s(stats["median"]), stats["median"], better, noise, of)


def instructions_cell(r: dict) -> Cell:
    """Instructions per step of a model on a Cortex-M core (QEMU counts them exactly)."""
    return replace(exact(r["instructions_per_step"], f"{r['instructions_per_step']:,.0f}"),
                   of=("instructions", r["model"], r["core"]))


def reference_accuracy(m: dict) -> float | None:
    """The model's metric on the reference runtime, else on the first runtime that measured it."""
    return m["accuracy"].get("torch", next(iter(m["accuracy"].values()), None))


def budget_text(m: dict) -> str:
    """A checkpoint's training budget on one line, '-' for what its metrics.json lacks."""
    b = m.get("training", {})
    t = b.get("train_seconds")
    return (f"steps {_dash(b.get('steps'), '{:,}')}, batch {_dash(b.get('batch_size'))}, "
            f"samples {_dash(b.get('samples_seen'), '{:,}')}, {_dash(t and t / 60, '{:.1f} min')}, "
            f"processes {_dash(b.get('processes'))}, threads {_dash(b.get('threads'))}")


def _has_budget(models: list[dict]) -> bool:
    return any("training" in m for m in models)


def _budget(models: list[dict]) -> tuple[list[str], callable]:
    """The training-budget column of tables that show a checkpoint's accuracy (none for ONNX files)."""
    if not _has_budget(models):
        return [], lambda m: []
    return ["training budget"], lambda m: [label(budget_text(m) if "training" in m else "-")]


def first_run(results: dict, model: str, runtime: str, batch: int) -> dict | None:
    """The run of ``model`` on ``runtime`` at ``batch`` with the first configured thread count."""
    threads = results["config"]["threads"][0]
    return next((r for r in results["runs"] if (r["model"], r["runtime"], r["batch"], r["threads"]) ==
                 (model, runtime, batch, threads)), None)


def runtimes(results: dict) -> list[str]:
    return list(dict.fromkeys(r["runtime"] for r in results["runs"]))


# -- the tables ------------------------------------------------------------------------------------

def _baselines(results: dict) -> str:
    """The baselines benched (``LSTM``, ``LSTM and GRU``; ``baselines`` when there is none)."""
    kinds = {m["kind"] for m in results["models"]}
    return " and ".join(name for kind, name in BASELINES.items() if kind in kinds) or "baselines"


def summary(results: dict) -> Table:
    """Per model: metric, latency per runtime at the smallest batch, synaptic operations, energy."""
    cfg, rts = results["config"], runtimes(results)
    b1, limit = min(cfg["batch_sizes"]), cfg["heldout_limit"]
    if cfg.get("inputs") is None and cfg.get("task") is None:  # no --model data source: the checkpoints
        title, data = f"LSNN against {_baselines(results)}", f"Accuracy on the first {limit} held-out examples (reference runtime);"
    else:
        source = (f"the first {limit} sequences of {Path(cfg['inputs']).name}" if cfg.get("inputs")
                  else f"the first {limit} held-out examples of {cfg['task']}")
        title, data = "Models", f"Accuracy, where the data has labels, on {source} (reference runtime);"
    budget_cols, budget = _budget(results["models"])
    t = Table("summary", title, f"{data} latency per sequence at batch {b1} (median); energy per inference from "
              "synaptic operations.",
              ["task", "model", "accuracy (MSE for regression)", *budget_cols, *(f"latency {r}" for r in rts),
               "ACs", "MACs", "energy (uJ)", "firing rate (Hz)"], keys=2,
              defines=("accuracy", "training budget", "latency", "energy", "spike statistics"))
    for m in sorted(results["models"], key=lambda m: (m["task"], m["kind"])):
        runs = [first_run(results, m["name"], r, b1) for r in rts]
        metric = "" if m.get("metric", "accuracy") in ("accuracy", None) else f" {m['metric']}"
        acc = reference_accuracy_cell(m)
        rate = m.get("firing_rate_hz", {}).get("all")
        t.rows.append([label(m["task"]), label(f"{m['name']} ({m['kind']})"),
                       replace(acc, text=acc.text + metric), *budget(m),
                       *(latency_cell(run) if run else label("-") for run in runs),
                       exact(m["acs_per_inference"], f"{m['acs_per_inference']:.3g}"),
                       exact(m["macs_per_inference"], f"{m['macs_per_inference']:.3g}"),
                       exact(m["energy_uj_per_inference"], f"{m['energy_uj_per_inference']:.3f}"),
                       Cell(_dash(rate, "{:.2f}"), rate)])
    return t


def learning_curves(results: dict) -> Table | None:
    curves = [m for m in results["models"] if m.get("learning_curve")]
    if not curves:
        return None
    K = len(curves[0]["learning_curve"]["mse_per_trial"])
    shown = sorted({0, 1, 2, 3, 4, 5, 10, 15, K - 1} & set(range(K)))
    t = Table("learning", "Learning to learn: squared error per trial of held-out episodes",
              "Functions never seen in training; weights fixed, so all improvement within an episode comes from "
              "the network's state. The linear baseline is the optimal linear predictor fit per episode on the "
              "trials before; the ceiling, the posterior mean under the function family itself, fit on the same "
              "trials.", ["model", *(f"trial {k + 1}" for k in shown)], defines=("accuracy",))
    for m in curves:
        c = m["learning_curve"]["mse_per_trial"]
        t.rows.append([label(f"{m['name']} ({m['kind']})"), *(Cell(f"{c[k]:.4f}", c[k], LOWER, 0.0) for k in shown)])
    for key, name in CURVE_BASELINES:
        base = curves[0]["learning_curve"].get(key)
        if base is not None:
            t.rows.append([label(name), *(Cell(f"{base[k]:.4f}", base[k]) for k in shown)])
    return t


#: the per-episode predictors a learning curve is shown beside (a key of its metrics, and a name)
CURVE_BASELINES = (("linear_baseline_mse_per_trial", "linear predictor per episode"),
                   ("nonlinear_fit_mse_per_trial", "fit of the function family per episode (ceiling)"))


def accuracy(results: dict) -> Table:
    cols = list(dict.fromkeys(runtimes(results) + [k for m in results["models"] for k in m["accuracy"]]))
    budget_cols, budget = _budget(results["models"])
    t = Table("accuracy", "Accuracy per runtime", "Held-out decisions, or MSE for regression; Cortex-M cores on "
              "fewer sequences (see the microcontrollers).", ["model", *cols, *budget_cols],
              defines=("accuracy", "training budget", "runtimes", "data"))
    for m in results["models"]:
        t.rows.append([label(m["name"]), *(accuracy_cell(m, m["accuracy"].get(r), r) for r in cols), *budget(m)])
    return t


def latency(results: dict) -> Table:
    t = Table("latency", "Latency, throughput and memory", "Every run: one row per model, runtime, batch and "
              "thread count.", ["model", "runtime", "batch", "threads", "per sequence median (p10-p90)", "per step",
                                "throughput (seq/s)", "artifact"], keys=4, defines=("latency", "memory"))
    for r in results["runs"]:
        s = r["latency_per_sequence_s"]
        t.rows.append([label(r["model"]), label(r["runtime"]), label(r["batch"]), label(r["threads"]),
                       latency_cell(r, text=f"{fmt_s(s['median'])} ({fmt_s(s['p10'])}-{fmt_s(s['p90'])})"),
                       latency_cell(r, "latency_per_step_s", better=None),
                       Cell(f"{r['throughput_seq_per_s']:.1f}", r["throughput_seq_per_s"]),
                       exact(r["artifact_bytes"], f"{r['artifact_bytes'] / 1024:.0f} KiB")])
    return t


def peak_memory(results: dict) -> Table:
    rts = runtimes(results)
    t = Table("memory", "Peak working memory (first call, MiB)", "One sample per runtime (no repeats): "
              "changes are shown, never flagged.", ["model", "batch", *rts], defines=("memory",))
    for m in results["models"]:
        pw = m.get("peak_working_memory_bytes", {})
        batch = next(iter(pw.values()), {}).get("batch", "-")
        t.rows.append([label(m["name"]), label(batch), *(
            Cell(f"{pw[r]['bytes'] / 2**20:.1f}", pw[r]["bytes"] / 2**20) if r in pw else label("-") for r in rts)])
    return t


def microcontrollers(results: dict) -> Table | None:
    mcu = results.get("microcontrollers") or []
    if not mcu:
        return None
    by = {m["name"]: m for m in results["models"]}
    budget_cols, budget = _budget(results["models"])
    t = Table("mcu", "Microcontrollers (QEMU)",
              f"Instructions per step counted by QEMU (not cycles) on the first {mcu[0]['sequences']} held-out "
              "sequences, so at the trained firing rates; the dense column runs the ALIF kernel without event "
              "skipping on the same inputs. Flash and RAM: the model's objects; stack: one step.",
              ["model", "core (board)", "accuracy", *budget_cols, "instructions/step", "dense ALIF",
               "instructions/inference", "flash (KiB)", "RAM (KiB)", "stack (B)"], keys=2,
              defines=("microcontrollers", "training budget"))
    for r in mcu:
        dense, m = r.get("instructions_per_step_dense"), by.get(r["model"], {})
        t.rows.append([label(r["model"]), label(f"{r['core']} ({r['board']})"),
                       accuracy_cell({"name": r["model"], **m}, r["accuracy"], r["core"]), *budget(m),
                       instructions_cell(r),
                       exact(dense, f"{dense:,.0f}") if dense is not None else label("-"),
                       exact(r["instructions_per_step"] * r["steps"], f"{r['instructions_per_step'] * r['steps']:.3g}",
                             None),
                       exact(r["flash_bytes"], f"{r['flash_bytes'] / 1024:.1f}"),
                       exact(r["ram_bytes"], f"{r['ram_bytes'] / 1024:.1f}"),
                       exact(r["stack_bytes"], str(r["stack_bytes"]))])
    return t


def layers(results: dict) -> Table:
    """Spikes, synaptic operations and energy of every layer (graph node) of every model."""
    t = Table("layers", "Spikes and energy per layer", "Per inference (one sequence), on the held-out inputs, "
              "from the reference runtime; layers are the graph's nodes by name (the module path of an exported "
              "layer).", ["model", "layer", "neurons (LIF)", "spikes", "rate all (Hz)", "rate LIF", "rate adaptive",
                          "ACs", "MACs", "energy (uJ)"], keys=2, defines=("spike statistics", "energy"))
    for m in results["models"]:
        for layer in m.get("layers", []):
            fr = layer.get("firing_rate_hz", {})
            rate = [Cell(_dash(fr.get(k), "{:.2f}"), fr.get(k)) for k in ("all", "lif", "alif")]
            spikes = layer.get("spikes_per_inference")
            t.rows.append([label(m["name"]), label(layer["name"]),
                           label(f"{layer['neurons']} ({layer['n_lif']})" if "neurons" in layer else "-"),
                           Cell(_dash(spikes, "{:.4g}"), spikes), *rate,
                           exact(layer["acs"], f"{layer['acs']:.4g}"), exact(layer["macs"], f"{layer['macs']:.4g}"),
                           exact(layer["energy_uj"], f"{layer['energy_uj']:.4g}")])
    return t


def weights(results: dict) -> Table:
    t = Table("weights", "Weights and spikes", "Firing rates over all ALIF layers; compile time of the CPU target "
              "(not judged).", ["model", "weight bytes", "rate all", "rate LIF", "rate adaptive", "compile cpu (s)"],
              defines=("memory", "spike statistics"))
    for m in results["models"]:
        fr, cs = m.get("firing_rate_hz", {}), m.get("compile_seconds", {}).get("cpu")
        t.rows.append([label(m["name"]), exact(m["weight_bytes"], str(m["weight_bytes"])),
                       *(Cell(_dash(fr.get(k), "{:.2f}"), fr.get(k)) for k in ("all", "lif", "alif")),
                       Cell(_dash(cs, "{:.2f}"), cs)])
    return t


def tables(results: dict) -> list[Table]:
    """Every table of the report, in order (the headline's come first, from :mod:`.report_headline`)."""
    built = [summary(results), learning_curves(results), accuracy(results), latency(results),
             peak_memory(results), microcontrollers(results), layers(results), weights(results)]
    return [t for t in built if t is not None]
