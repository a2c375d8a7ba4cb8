"""``lsnn bench``: accuracy, latency, memory, spike statistics and spike-based energy
of LSNN, LIF and LSTM checkpoints on every runtime and target, as one matrix.

Definitions (also written into the report):

* runtimes: ``torch`` is the reference runtime (ONNX's reference evaluator
  with the ``ai.lsnn`` ops computed by ``lsnn.reference`` in PyTorch eager
  mode; the LSTM by onnx's NumPy reference), ``ort`` stock onnxruntime on the
  exported file, ``cpu`` the TVM-compiled artifact;
* accuracy: held-out decisions correct, per model and runtime; for regression
  (``l2l-regression``) the held-out mean squared error of the trial predictions
  instead (lower is better), and the learning curve over an episode's trials
  beside the per-episode optimal linear predictor;
* latency: wall time of one call on a batch after ``warmup`` calls, over
  ``repeats`` calls: median, p10, p90; per sequence = per call / batch, per
  step = per sequence / T; throughput = sequences per second; threads fixed;
* memory: weight bytes (the model's initializers), artifact size (the ONNX
  file, or the compiled library), peak working memory (the largest growth of
  the process's resident memory during the runtime's first call, on a batch
  of held-out inputs, sampled every millisecond: what the runtime allocates
  to run, as the operating system sees it);
* spike statistics: firing rate per population (LIF, adaptive) on the
  held-out inputs and its distribution over neurons;
* energy: synaptic operations per inference as NeuroBench counts them
  (:mod:`lsnn.bench.energy`), ``ACs x E_AC + MACs x E_MAC``;
* microcontrollers (``cortex-m``: each of ``cortex_m_cores`` in QEMU): accuracy
  on the first ``cortex_m_heldout`` held-out sequences; instructions per step
  in ``lsnn_step`` counted by QEMU (``-icount shift=0``, SysTick) on those
  sequences, so at the trained firing rates; for spiking models also with the
  dense ALIF kernel (``events=False``) on the same inputs; flash and RAM of the
  model's objects (``arm-none-eabi-size``), worst-case stack of one step
  (``-fstack-usage``). Instructions, not cycles: QEMU models no pipeline,
  caches or wait states.
"""
from __future__ import annotations

import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsnn.reference.errors import ConfigError, MissingFileError
from lsnn.reference.files import read_json
from lsnn.reference.paths import MODELS_DIR, committed_models

from .energy import E_AC_PJ, E_MAC_PJ, SOURCE, model_ops

SCHEMA = "lsnn-bench/1"
RUNTIMES = ["torch", "ort", "cpu", "cuda", "cortex-m"]

QUICK = {
    "models": [str(MODELS_DIR / name) for name in committed_models()],
    "runtimes": RUNTIMES,
    "batch_sizes": [1, 16],
    "heldout_limit": 64,
    "repeats": 3,
    "warmup": 1,
    "threads": 1,
    "data_dir": None,
    "e_ac_pj": E_AC_PJ,
    "e_mac_pj": E_MAC_PJ,
    "cortex_m_cores": ["cortex-m4", "cortex-m7", "cortex-m55"],
    "cortex_m_heldout": 8,
}
FULL = dict(QUICK, batch_sizes=[1, 16, 64], heldout_limit=512, repeats=10, warmup=2, cortex_m_heldout=64)


def load_config(path: str | None, quick: bool) -> dict:
    base = dict(QUICK if quick or path is None else FULL)
    if path:
        p = Path(path)
        if not p.is_file():
            raise MissingFileError(f"bench config not found: {p}")
        user = read_json(p, ConfigError, "bench configuration")
        unknown = set(user) - set(base)
        if unknown:
            raise ConfigError(f"{p}: unknown key(s) {sorted(unknown)}; known: {sorted(base)}")
        base.update(user)
    bad = set(base["runtimes"]) - set(RUNTIMES)
    if bad:
        raise ConfigError(f"unknown runtime(s) {sorted(bad)}; known: {RUNTIMES}")
    return base


def unavailable_reason(runtime: str) -> str | None:
    """Why this machine cannot run ``runtime``, or None."""
    if runtime in ("torch", "ort", "cpu"):
        return None
    if runtime == "cuda":
        from lsnn.targets.cuda.device import cuda_device
        from lsnn.targets.cuda.nvcc import find_nvcc

        ok, why = cuda_device()
        return why if not ok else None if find_nvcc() else "nvcc not found (the CUDA target compiles with it)"
    if runtime == "cortex-m":
        from lsnn.targets.cortex_m import missing_tools

        missing = missing_tools()
        return f"{', '.join(missing)} not found (Debian: gcc-arm-none-eabi qemu-system-arm)" if missing else None
    return f"unknown runtime {runtime}"


class RssSampler:
    """Peak growth of this process's resident memory while active (1 ms sampling)."""

    def __init__(self):
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()
        return self

    def _loop(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())
        self.growth = self.peak - self.base


@dataclass
class ModelEntry:
    name: str
    path: Path
    kind: str
    task: str
    onnx_path: Path
    weight_bytes: int
    heldout: list = field(default_factory=list)  # (X, target) batches
    stats: dict = field(default_factory=dict)
    task_obj: object = None
    has_alif: bool = False  # the graph holds an ALIF layer (its kernel has a dense variant)


def environment(threads: int) -> dict:
    import onnx
    import onnxruntime
    import torch
    import tvm

    from lsnn.targets.cuda.device import cuda_device

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "threads": threads, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "onnx": onnx.__version__, "tvm": tvm.__version__, "numpy": np.__version__,
            "gpu": cuda_device()[0], "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def _prepare(path: Path, cfg: dict, work: Path) -> ModelEntry:
    import onnx

    from lsnn.compiler.onnx.export import export_checkpoint
    from lsnn.reference import checkpoint
    from lsnn.reference.tasks import task_from_config

    _, config, _ = checkpoint.load(path)
    proto = export_checkpoint(path, heldout=0)  # the bench measures accuracy itself
    onnx_path = work / f"{path.name}.onnx"
    onnx.save(proto, str(onnx_path))
    task = task_from_config(config["task"], cfg.get("data_dir"))
    heldout = list(task.heldout(max(cfg["batch_sizes"]), cfg["heldout_limit"]))
    weights = sum(int(np.prod(t.dims)) * 4 for t in proto.graph.initializer)
    return ModelEntry(path.name, path, config["model"]["kind"], task.name, onnx_path, weights, heldout,
                      task_obj=task, has_alif=any(n.op_type == "ALIF" for n in proto.graph.node))


def _reference_stats(entry: ModelEntry, cfg: dict) -> None:
    """Firing rates, a raster, synaptic operations, energy and (learning to learn) the learning
    curve, from one reference run over the held-out batches."""
    import torch

    from lsnn.reference import checkpoint
    from lsnn.reference.regularizers import population_rates_hz

    model, _, _ = checkpoint.load(entry.path)
    task = entry.task_obj
    rates, ops, curve, trials, n_seq = [], None, None, 0, 0
    with torch.no_grad():
        for X, target in entry.heldout:
            out = model(X)
            layer = model_ops(model, X.numpy(), None if out.Z is None else out.Z.numpy())
            ops = layer if ops is None else {k: ops[k] + layer[k] for k in ops}
            n_seq += X.shape[1]
            k = task.curve(out.Y.numpy(), target.numpy())
            if k is not None:
                curve, trials = (k if curve is None else curve + k), trials + task.score(out.Y, target)[1]
            if out.Z is not None:
                rates.append(out.Z.numpy().mean(0))  # per-sequence rates [B, H], spikes per step
                entry.stats.setdefault("raster", np.argwhere(out.Z.numpy()[:, 0] > 0).tolist())
    entry.stats.update(steps=int(entry.heldout[0][0].shape[0]), **_energy(ops, n_seq, cfg))
    if rates:
        per_neuron = np.concatenate(rates).mean(0) * 1000.0 / model.config.dt  # Hz
        entry.stats.update(firing_rate_hz=population_rates_hz(per_neuron, model.config),
                           rate_per_neuron_hz=per_neuron.tolist(), n_lif=model.config.n_lif)
    if curve is not None:  # learning to learn: error per trial of an episode
        entry.stats["learning_curve"] = task.curve_metrics(curve, trials, cfg["heldout_limit"])


def _energy(ops: dict, n_seq: int, cfg: dict) -> dict:
    per = {k: {"acs": v.acs / n_seq, "macs": v.macs / n_seq} for k, v in ops.items()}
    acs = sum(v["acs"] for v in per.values())
    macs = sum(v["macs"] for v in per.values())
    return {"synops_per_inference": per, "acs_per_inference": acs, "macs_per_inference": macs,
            "energy_uj_per_inference": (acs * cfg["e_ac_pj"] + macs * cfg["e_mac_pj"]) * 1e-6}


def _open(entry: ModelEntry, runtime: str, threads: int, work: Path):
    """(callable runtime, artifact bytes)."""
    from lsnn.targets import open_runtime

    if runtime in ("cpu", "cuda"):
        from lsnn.compiler import compile

        options = {}
        if runtime == "cuda":
            from lsnn.targets.cuda.device import device_arch

            options["arch"] = device_arch()
        t0 = time.perf_counter()
        art = compile(entry.onnx_path, runtime, **options)
        entry.stats.setdefault("compile_seconds", {})[runtime] = time.perf_counter() - t0
        d = art.save(work / f"{entry.name}-{runtime}")
        size = sum(p.stat().st_size for p in d.iterdir())
        return art, size
    rt = open_runtime(entry.onnx_path, runtime, threads)
    return rt, entry.onnx_path.stat().st_size


def _microcontrollers(entry: ModelEntry, cfg: dict, model_result: dict) -> list[dict]:
    """Each Cortex-M core in QEMU: held-out accuracy, instructions per step, footprint."""
    from lsnn.compiler import compile

    X_all = np.concatenate([x.numpy() for x, _ in entry.heldout], axis=1)
    t_all = np.concatenate([t.numpy() for _, t in entry.heldout], axis=1)  # [T, B] labels
    n = min(cfg["cortex_m_heldout"], X_all.shape[1])
    X, target = np.ascontiguousarray(X_all[:, :n]), t_all[:, :n]
    rows = []
    for core in cfg["cortex_m_cores"]:
        art = compile(entry.onnx_path, core)
        Y = art.run({"X": X}, ["Y"])["Y"]
        c, n_dec = entry.task_obj.score(Y, target)
        acc = c / max(n_dec, 1)
        fp = art.manifest["footprint"]
        row = {"model": entry.name, "core": core, "board": art.target_obj.board, "sequences": n,
               "steps": int(X.shape[0]), "accuracy": acc,
               "instructions_per_step": art.last_run.instructions_per_step,
               "flash_bytes": fp["model"]["flash_bytes"], "ram_bytes": fp["model"]["ram_bytes"],
               "stack_bytes": fp["stack_bytes_model"], "elf_flash_bytes": fp["elf"]["flash_bytes"],
               "elf_ram_bytes": fp["elf"]["ram_bytes"], "compile_seconds": art.manifest["compile_seconds"]}
        if entry.has_alif:
            dense = compile(entry.onnx_path, core, events=False)
            Yd = dense.run({"X": X}, ["Y"])["Y"]
            row["instructions_per_step_dense"] = dense.last_run.instructions_per_step
            row["dense_outputs_equal"] = bool(np.array_equal(Yd, Y))
        model_result["accuracy"][core] = acc
        rows.append(row)
    return rows


def _percentiles(ts: list[float]) -> dict:
    a = np.asarray(ts)
    return {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)), "p90": float(np.percentile(a, 90))}


def run_bench(cfg: dict, out: Path, progress: bool = True) -> dict:
    """Run the matrix and return the results (also written by :func:`lsnn.bench.report.write`)."""
    import torch
    from tqdm import tqdm

    torch.set_num_threads(cfg["threads"])
    os.environ["TVM_NUM_THREADS"] = str(cfg["threads"])
    results = {"schema": SCHEMA, "environment": environment(cfg["threads"]), "config": cfg,
               "energy_source": SOURCE, "models": [], "runs": [], "microcontrollers": [], "unavailable": []}
    runnable = _runnable(cfg, results)
    paths = _checkpoints(cfg, results)
    with tempfile.TemporaryDirectory(prefix="lsnn-bench-") as tmp:
        work = Path(tmp)
        bar = tqdm(total=len(paths) * (1 + len(runnable)), desc="lsnn bench", disable=not progress,
                   dynamic_ncols=True)
        entries = []
        for p in paths:
            bar.set_postfix_str(f"{p.name}: reference")
            entries.append(_prepare(p, cfg, work))
            _reference_stats(entries[-1], cfg)
            bar.update()
        for e in entries:
            model_result = {"name": e.name, "kind": e.kind, "task": e.task, "weight_bytes": e.weight_bytes,
                            "metric": e.task_obj.metric, "accuracy": {}, **e.stats}
            for r in runnable:
                bar.set_postfix_str(f"{e.name}: {r}")
                if r == "cortex-m":
                    results["microcontrollers"] += _microcontrollers(e, cfg, model_result)
                else:
                    rt, size = _open(e, r, cfg["threads"], work)
                    _accuracy_and_memory(e, rt, r, model_result)
                    results["runs"] += _latencies(e, rt, r, size, cfg)
                bar.update()
            results["models"].append(model_result)
        bar.close()
    return results


def _runnable(cfg: dict, results: dict) -> list[str]:
    """The configured runtimes this machine can run; the others go to ``results["unavailable"]``."""
    runnable = []
    for r in cfg["runtimes"]:
        why = unavailable_reason(r)
        if why:
            results["unavailable"].append({"runtime": r, "reason": why})
        else:
            runnable.append(r)
    return runnable


def _checkpoints(cfg: dict, results: dict) -> list[Path]:
    """The configured checkpoint folders that exist; the others go to ``results["unavailable"]``."""
    paths = []
    for m in cfg["models"]:
        if (Path(m) / "config.json").is_file():
            paths.append(Path(m))
        else:
            results["unavailable"].append({"model": m, "reason": "no checkpoint at this path"})
    return paths


def _accuracy_and_memory(e: ModelEntry, rt, runtime: str, model_result: dict) -> None:
    """Held-out metric of ``rt``, and the memory its first call takes."""
    correct = total = 0
    for n, (X, target) in enumerate(e.heldout):
        if n == 0:  # the runtime's first call: its buffers are allocated here
            with RssSampler() as first:
                Y = rt.run({"X": X.numpy()}, ["Y"])["Y"]
            model_result.setdefault("peak_working_memory_bytes", {})[runtime] = {
                "batch": int(X.shape[1]), "bytes": int(first.growth)}
        else:
            Y = rt.run({"X": X.numpy()}, ["Y"])["Y"]
        c, n_dec = e.task_obj.score(Y, target.numpy())
        correct += c
        total += n_dec
    model_result["accuracy"][runtime] = correct / max(total, 1)


def _latencies(e: ModelEntry, rt, runtime: str, size: int, cfg: dict) -> list[dict]:
    """One latency row per configured batch size."""
    X_all = np.concatenate([x.numpy() for x, _ in e.heldout], axis=1)
    rows = []
    for B in cfg["batch_sizes"]:
        feeds = {"X": np.ascontiguousarray(X_all[:, np.arange(B) % X_all.shape[1]])}
        for _ in range(cfg["warmup"]):
            rt.run(feeds, ["Y"])
        ts = []
        for _ in range(cfg["repeats"]):
            t0 = time.perf_counter()
            rt.run(feeds, ["Y"])
            ts.append(time.perf_counter() - t0)
        call = _percentiles(ts)
        steps = X_all.shape[0]
        per_seq = {k: v / B for k, v in call.items()}
        rows.append({"model": e.name, "runtime": runtime, "batch": B, "threads": cfg["threads"], "steps": steps,
                     "latency_per_call_s": call, "latency_per_sequence_s": per_seq,
                     "latency_per_step_s": {k: v / steps for k, v in per_seq.items()},
                     "throughput_seq_per_s": B / call["median"], "artifact_bytes": size,
                     "repeats": cfg["repeats"]})
    return rows
