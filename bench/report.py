"""The bench report: ``results.json`` (versioned schema), ``report.md`` and a
self-contained ``report.html`` with its plots inlined. Files are written to a
temporary folder and renamed into place."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np

from lsnn.reference.files import write_folder

from .harness import __doc__ as DEFINITIONS


def _fmt_s(x: float) -> str:
    return f"{x * 1e3:.3f} ms" if x >= 1e-3 else f"{x * 1e6:.1f} us"


def _latency(results, model, runtime, batch):
    """The run of ``model`` on ``runtime`` at ``batch`` with the first configured thread count."""
    threads = results["config"]["threads"][0]
    for r in results["runs"]:
        if r["model"] == model and r["runtime"] == runtime and r["batch"] == batch and r["threads"] == threads:
            return r
    return None


def _reference_accuracy(m: dict) -> float | None:
    """The model's metric on the reference runtime, else on the first runtime that measured it."""
    return m["accuracy"].get("torch", next(iter(m["accuracy"].values()), None))


def _fmt_acc(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _layer_table(models: list[dict]) -> list[str]:
    """Spikes, synaptic operations and energy of every layer (graph node) of every model."""
    out = ["", "## Spikes and energy per layer", "",
           "Per inference (one sequence), on the held-out inputs, from the reference runtime; layers are "
           "the graph's nodes by name (the module path of an exported layer).", "",
           "| model | layer | neurons (LIF) | spikes | rate all (Hz) | rate LIF | rate adaptive | ACs | MACs | "
           "energy (uJ) |", "|---|---|---|---|---|---|---|---|---|---|"]
    f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
    for m in models:
        for layer in m.get("layers", []):
            fr = layer.get("firing_rate_hz", {})
            neurons = f"{layer['neurons']} ({layer['n_lif']})" if "neurons" in layer else "-"
            spikes = f"{layer['spikes_per_inference']:.4g}" if "spikes_per_inference" in layer else "-"
            out.append(f"| {m['name']} | {layer['name']} | {neurons} | {spikes} | {f(fr.get('all'))} | "
                       f"{f(fr.get('lif'))} | {f(fr.get('alif'))} | {layer['acs']:.4g} | {layer['macs']:.4g} | "
                       f"{layer['energy_uj']:.4g} |")
    return out


def _summary_heading(cfg: dict) -> list[str]:
    """The summary's title and data: the suite's checkpoints (LSNN against LSTM on a task's held-out
    set), or a user's ONNX files on an .npz or a task."""
    limit = cfg["heldout_limit"]
    if cfg.get("inputs") is None and cfg.get("task") is None:  # no --model data source: the checkpoints
        return ["## LSNN against LSTM", "", f"Accuracy on the first {limit} held-out examples (reference runtime);"]
    data = (f"the first {limit} sequences of {Path(cfg['inputs']).name}" if cfg.get("inputs")
            else f"the first {limit} held-out examples of {cfg['task']}")
    return ["## Models", "", f"Accuracy, where the data has labels, on {data} (reference runtime);"]


def markdown(results: dict) -> str:
    env, cfg = results["environment"], results["config"]
    runtimes = list(dict.fromkeys(r["runtime"] for r in results["runs"]))
    b1 = min(cfg["batch_sizes"])
    out = ["# lsnn bench report", "",
           f"Schema `{results['schema']}`. {env['cpu']}, {env['cores']} cores, timed at "
           f"{' and '.join(map(str, cfg['threads']))} thread(s) (summary: {cfg['threads'][0]}); "
           f"torch {env['torch']}, onnxruntime {env['onnxruntime']}, TVM {env['tvm']}; {env['time']}.", "",
           *_summary_heading(cfg),
           f"latency per sequence at batch {b1} (median); energy per inference from synaptic operations.", "",
           "| task | model | accuracy (MSE for regression) | " + " | ".join(f"latency {r}" for r in runtimes) +
           " | ACs | MACs | energy (uJ) | firing rate (Hz) |",
           "|---|---|---|" + "---|" * len(runtimes) + "---|---|---|---|"]
    for m in sorted(results["models"], key=lambda m: (m["task"], m["kind"])):
        acc = _reference_accuracy(m)
        lat = []
        for r in runtimes:
            run = _latency(results, m["name"], r, b1)
            lat.append(_fmt_s(run["latency_per_sequence_s"]["median"]) if run else "-")
        rate = m.get("firing_rate_hz", {}).get("all")
        label = "" if m.get("metric", "accuracy") in ("accuracy", None) else f" {m['metric']}"
        out.append(f"| {m['task']} | {m['name']} ({m['kind']}) | {_fmt_acc(acc)}{label} | " + " | ".join(lat) +
                   f" | {m['acs_per_inference']:.3g} | {m['macs_per_inference']:.3g} | "
                   f"{m['energy_uj_per_inference']:.3f} | {'-' if rate is None else f'{rate:.2f}'} |")
    curves = [m for m in results["models"] if m.get("learning_curve")]
    if curves:
        K = len(curves[0]["learning_curve"]["mse_per_trial"])
        shown = sorted({0, 1, 2, 3, 4, 5, 10, 15, K - 1} & set(range(K)))
        out += ["", "## Learning to learn: squared error per trial of held-out episodes", "",
                "Functions never seen in training; weights fixed, so all improvement within an episode "
                "comes from the network's state. The linear baseline is the optimal linear predictor "
                "fit per episode on the trials before.", "",
                "| model | " + " | ".join(f"trial {k + 1}" for k in shown) + " |", "|---|" + "---|" * len(shown)]
        for m in curves:
            c = m["learning_curve"]["mse_per_trial"]
            out.append(f"| {m['name']} ({m['kind']}) | " + " | ".join(f"{c[k]:.4f}" for k in shown) + " |")
        base = curves[0]["learning_curve"]["linear_baseline_mse_per_trial"]
        out.append("| linear predictor per episode | " + " | ".join(f"{base[k]:.4f}" for k in shown) + " |")
    cols = list(dict.fromkeys(runtimes + [k for m in results["models"] for k in m["accuracy"]]))
    out += ["", "## Accuracy per runtime (held-out decisions, or MSE for regression; Cortex-M cores on fewer "
            "sequences, see below)", "",
            "| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for m in results["models"]:
        out.append(f"| {m['name']} | " + " | ".join(_fmt_acc(m["accuracy"].get(r)) for r in cols) + " |")
    out += ["", "## Latency, throughput and memory", "",
            "| model | runtime | batch | threads | per sequence median (p10-p90) | per step | throughput (seq/s) | "
            "artifact |", "|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        s = r["latency_per_sequence_s"]
        out.append(f"| {r['model']} | {r['runtime']} | {r['batch']} | {r['threads']} | {_fmt_s(s['median'])} "
                   f"({_fmt_s(s['p10'])}-{_fmt_s(s['p90'])}) | {_fmt_s(r['latency_per_step_s']['median'])} | "
                   f"{r['throughput_seq_per_s']:.1f} | {r['artifact_bytes'] / 1024:.0f} KiB |")
    out += ["", "## Peak working memory (first call, MiB)", "",
            "| model | batch | " + " | ".join(runtimes) + " |", "|---|---|" + "---|" * len(runtimes)]
    for m in results["models"]:
        pw = m.get("peak_working_memory_bytes", {})
        batch = next(iter(pw.values()), {}).get("batch", "-")
        out.append(f"| {m['name']} | {batch} | " + " | ".join(
            f"{pw[r]['bytes'] / 2**20:.1f}" if r in pw else "-" for r in runtimes) + " |")
    mcu = results.get("microcontrollers") or []
    if mcu:
        out += ["", "## Microcontrollers (QEMU)", "",
                f"Instructions per step counted by QEMU (not cycles) on the first {mcu[0]['sequences']} held-out "
                "sequences, so at the trained firing rates; the dense column runs the ALIF kernel without "
                "event skipping on the same inputs. Flash and RAM: the model's objects; stack: one step.", "",
                "| model | core (board) | accuracy | instructions/step | dense ALIF | instructions/inference | "
                "flash (KiB) | RAM (KiB) | stack (B) |", "|---|---|---|---|---|---|---|---|---|"]
        for r in mcu:
            dense = r.get("instructions_per_step_dense")
            out.append(f"| {r['model']} | {r['core']} ({r['board']}) | {r['accuracy']:.4f} | "
                       f"{r['instructions_per_step']:,.0f} | {'-' if dense is None else f'{dense:,.0f}'} | "
                       f"{r['instructions_per_step'] * r['steps']:.3g} | {r['flash_bytes'] / 1024:.1f} | "
                       f"{r['ram_bytes'] / 1024:.1f} | {r['stack_bytes']} |")
    out += _layer_table(results["models"])
    out += ["", "## Weights and spikes", "", "| model | weight bytes | rate all | rate LIF | rate adaptive | "
            "compile cpu (s) |", "|---|---|---|---|---|---|"]
    for m in results["models"]:
        fr = m.get("firing_rate_hz", {})
        f = lambda x: "-" if x is None else f"{x:.2f}"  # noqa: E731
        cs = m.get("compile_seconds", {}).get("cpu")
        out.append(f"| {m['name']} | {m['weight_bytes']} | {f(fr.get('all'))} | {f(fr.get('lif'))} | "
                   f"{f(fr.get('alif'))} | {f(cs)} |")
    if results["unavailable"]:
        out += ["", "## Not run here", ""]
        out += [f"- {u.get('runtime') or u.get('model')}: {u['reason']}" for u in results["unavailable"]]
    out += ["", "## Definitions", "", DEFINITIONS.strip(), "",
            f"Energy constants: E_AC = {cfg['e_ac_pj']} pJ, E_MAC = {cfg['e_mac_pj']} pJ. Source: "
            f"{results['energy_source']}.", ""]
    return "\n".join(out)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(results: dict) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = {}
    b1 = min(results["config"]["batch_sizes"])
    runs = [r for r in results["runs"] if r["batch"] == b1 and r["threads"] == results["config"]["threads"][0]]
    models = list(dict.fromkeys(r["model"] for r in runs))
    runtimes = list(dict.fromkeys(r["runtime"] for r in runs))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    w = 0.8 / max(len(runtimes), 1)
    for k, rt in enumerate(runtimes):
        vals = [next((r["latency_per_sequence_s"]["median"] * 1e3 for r in runs
                      if r["model"] == m and r["runtime"] == rt), np.nan) for m in models]
        ax.bar(np.arange(len(models)) + k * w, vals, w, label=rt)
    ax.set_xticks(np.arange(len(models)) + w * (len(runtimes) - 1) / 2, models, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel(f"ms per sequence (batch {b1})")
    if runtimes:
        ax.legend()
    ax.set_title("Latency per target")
    figs["latency"] = _png(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in results["models"]:
        acc = _reference_accuracy(m)
        if m.get("metric") != "accuracy" or acc is None:
            continue
        ax.scatter(m["energy_uj_per_inference"], acc, marker="o" if m["kind"] != "lstm" else "s")
        ax.annotate(m["name"], (m["energy_uj_per_inference"], acc), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (uJ, synaptic operations)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("Energy against accuracy")
    figs["energy"] = _png(fig)

    curves = [m for m in results["models"] if m.get("learning_curve")]
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for m in curves:
            c = m["learning_curve"]["mse_per_trial"]
            ax.plot(np.arange(1, len(c) + 1), c, marker="o", ms=3, label=f"{m['name']} ({m['kind']})")
        base = curves[0]["learning_curve"]["linear_baseline_mse_per_trial"]
        ax.plot(np.arange(1, len(base) + 1), base, "k--", label="linear predictor per episode")
        ax.set_yscale("log")
        ax.set_xlabel("trial of the episode")
        ax.set_ylabel("squared error (held-out functions)")
        ax.set_title("Learning to learn: error across an episode")
        ax.legend(fontsize=7)
        figs["learning_curves"] = _png(fig)

    spiking = [m for m in results["models"] if m.get("raster")]
    if spiking:
        m = spiking[0]
        pts = np.asarray(m["raster"]).reshape(-1, 2)
        fig, ax = plt.subplots(figsize=(8, 3))
        ax.scatter(pts[:, 0], pts[:, 1], s=0.5, c="k")
        if m.get("n_lif"):
            ax.axhline(m["n_lif"] - 0.5, color="tab:red", lw=0.5)
        ax.set_xlabel("step (ms)")
        ax.set_ylabel("neuron (LIF below the line, adaptive above)")
        ax.set_title(f"Spike raster of one held-out input: {m['name']}")
        figs["raster"] = _png(fig)
        fig, ax = plt.subplots(figsize=(5, 3))
        for mm in spiking:
            ax.hist(mm["rate_per_neuron_hz"], bins=30, alpha=0.5, label=mm["name"])
        ax.set_xlabel("firing rate (Hz)")
        ax.set_ylabel("neurons")
        ax.legend(fontsize=7)
        ax.set_title("Firing-rate distribution")
        figs["rates"] = _png(fig)
    return figs


def html_report(results: dict, md: str) -> str:
    figs = plots(results)
    imgs = "\n".join(f'<h2>{html.escape(k)}</h2><img alt="{k}" src="data:image/png;base64,{v}">'
                     for k, v in figs.items())
    return ("<!doctype html><html><head><meta charset='utf-8'><title>lsnn bench report</title>"
            "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}pre{white-space:pre-wrap}</style>"
            f"</head><body>{imgs}<h2>Tables</h2><pre>{html.escape(md)}</pre></body></html>")


def write(results: dict, out: Path) -> Path:
    """``results.json``, ``report.md`` and ``report.html`` in the folder ``out``, swapped in whole;
    an existing folder is replaced only if lsnn wrote it (:func:`lsnn.reference.files.write_folder`)."""
    def fill(tmp: Path) -> None:
        md = markdown(results)
        (tmp / "results.json").write_text(json.dumps(results, indent=1) + "\n")
        (tmp / "report.md").write_text(md)
        (tmp / "report.html").write_text(html_report(results, md))

    write_folder(out, fill, "bench report")
    return Path(out)
