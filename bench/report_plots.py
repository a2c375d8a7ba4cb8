"""The report's plots, as base64 PNGs by name, each with its title (matplotlib, Agg)."""
from __future__ import annotations

import base64
import io

import numpy as np

from .report_tables import BASELINES, CURVE_BASELINES, reference_accuracy


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _first_threads(results: dict) -> list[dict]:
    return [r for r in results["runs"] if r["threads"] == results["config"]["threads"][0]]


def _bars(ax, groups: list[str], series: dict[str, list[float]]) -> None:
    """Grouped bars: one group per name in ``groups``, one bar per series."""
    w = 0.8 / max(len(series), 1)
    for k, (name, vals) in enumerate(series.items()):
        ax.bar(np.arange(len(groups)) + k * w, vals, w, label=name)
    ax.set_xticks(np.arange(len(groups)) + w * (len(series) - 1) / 2, groups, rotation=20, ha="right")
    if series:
        ax.legend(fontsize=7)


def latency(plt, results: dict):
    b1 = min(results["config"]["batch_sizes"])
    runs = [r for r in _first_threads(results) if r["batch"] == b1]
    models = list(dict.fromkeys(r["model"] for r in runs))
    series = {rt: [next((r["latency_per_sequence_s"]["median"] * 1e3 for r in runs
                         if r["model"] == m and r["runtime"] == rt), np.nan) for m in models]
              for rt in dict.fromkeys(r["runtime"] for r in runs)}
    fig, ax = plt.subplots(figsize=(8, 3.5))
    _bars(ax, models, series)
    ax.set_yscale("log")
    ax.set_ylabel(f"ms per sequence (batch {b1})")
    ax.set_title("Latency per target")
    return fig


def throughput(plt, results: dict):
    """Sequences per second against batch size, per model and runtime (first thread count)."""
    runs = _first_threads(results)
    if len({r["batch"] for r in runs}) < 2:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    models = list(dict.fromkeys(r["model"] for r in runs))  # a colour per model, a line style per runtime
    styles = {rt: ls for rt, ls in zip(dict.fromkeys(r["runtime"] for r in runs), ["-", "--", ":", "-."] * 4)}
    for key in dict.fromkeys((r["model"], r["runtime"]) for r in runs):
        pts = sorted((r["batch"], r["throughput_seq_per_s"]) for r in runs if (r["model"], r["runtime"]) == key)
        ax.plot(*zip(*pts), marker="o", ms=3, color=f"C{models.index(key[0]) % 10}", linestyle=styles[key[1]],
                label=f"{key[0]} / {key[1]}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("sequences per second")
    ax.set_title(f"Throughput against batch size ({results['config']['threads'][0]} thread(s))")
    ax.legend(fontsize=6, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    return fig


def instructions(plt, results: dict):
    """Cortex-M instructions per step per model and core, and the dense ALIF kernel's."""
    mcu = results.get("microcontrollers") or []
    if not mcu:
        return None
    models = list(dict.fromkeys(r["model"] for r in mcu))
    series = {}
    for core in dict.fromkeys(r["core"] for r in mcu):
        for dense, key in ((False, "instructions_per_step"), (True, "instructions_per_step_dense")):
            vals = [next((r.get(key, np.nan) for r in mcu if (r["model"], r["core"]) == (m, core)), np.nan)
                    for m in models]
            if not all(np.isnan(vals)):
                series[f"{core}{' dense ALIF' if dense else ''}"] = vals
    fig, ax = plt.subplots(figsize=(8, 3.5))
    _bars(ax, models, series)
    ax.set_yscale("log")
    ax.set_ylabel("instructions per step (QEMU)")
    ax.set_title("Cortex-M instructions per step")
    return fig


def energy(plt, results: dict):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m in results["models"]:
        acc = reference_accuracy(m)
        if m.get("metric") != "accuracy" or acc is None:
            continue
        ax.scatter(m["energy_uj_per_inference"], acc, marker="s" if m["kind"] in BASELINES else "o")
        ax.annotate(m["name"], (m["energy_uj_per_inference"], acc), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("energy per inference (uJ, synaptic operations)")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("Energy against accuracy")
    return fig


def learning_curves(plt, results: dict):
    curves = [m for m in results["models"] if m.get("learning_curve")]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m in curves:
        c = m["learning_curve"]["mse_per_trial"]
        ax.plot(np.arange(1, len(c) + 1), c, marker="o", ms=3, label=f"{m['name']} ({m['kind']})")
    for (key, name), style in zip(CURVE_BASELINES, ("k--", "k:")):
        base = curves[0]["learning_curve"].get(key)
        if base is not None:
            ax.plot(np.arange(1, len(base) + 1), base, style, label=name)
    ax.set_yscale("symlog", linthresh=1e-3)  # the ceiling reaches 0
    ax.set_xlabel("trial of the episode")
    ax.set_ylabel("squared error (held-out functions)")
    ax.set_title("Learning to learn: error across an episode")
    ax.legend(fontsize=7)
    return fig


def raster(plt, results: dict):
    spiking = [m for m in results["models"] if m.get("raster")]
    if not spiking:
        return None
    m = spiking[0]
    pts = np.asarray(m["raster"]).reshape(-1, 2)
    fig, ax = plt.subplots(figsize=(8, 3))
    ax.scatter(pts[:, 0], pts[:, 1], s=0.5, c="k")
    if m.get("n_lif"):
        ax.axhline(m["n_lif"] - 0.5, color="tab:red", lw=0.5)
    ax.set_xlabel("step (ms)")
    ax.set_ylabel("neuron (LIF below the line, adaptive above)")
    ax.set_title(f"Spike raster of one held-out input: {m['name']}")
    return fig


def rates(plt, results: dict):
    spiking = [m for m in results["models"] if m.get("raster")]
    if not spiking:
        return None
    fig, ax = plt.subplots(figsize=(5, 3))
    for m in spiking:
        ax.hist(m["rate_per_neuron_hz"], bins=30, alpha=0.5, label=m["name"])
    ax.set_xlabel("firing rate (Hz)")
    ax.set_ylabel("neurons")
    ax.legend(fontsize=7)
    ax.set_title("Firing-rate distribution")
    return fig


#: (id, heading, plot) in the report's order
PLOTS = [("latency", "Latency per target", latency), ("throughput", "Throughput against batch size", throughput),
         ("instructions", "Cortex-M instructions per step", instructions),
         ("energy", "Energy against accuracy", energy),
         ("learning_curves", "Learning to learn", learning_curves), ("raster", "Spike raster", raster),
         ("rates", "Firing-rate distribution", rates)]


def plots(results: dict) -> list[tuple[str, str, str]]:
    """(id, heading, base64 PNG) of every plot the results have data for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for pid, heading, plot in PLOTS:
        fig = plot(plt, results)
        if fig is not None:
            out.append((pid, heading, _png(fig)))
    return out
