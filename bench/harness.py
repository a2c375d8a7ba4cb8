"""``lsnn bench``: accuracy, latency, memory, spike statistics and spike-based energy
of LSNN, LIF and LSTM checkpoints, or of any ONNX files (``--model``, e.g. from
``lsnn.compiler.export``), on every runtime and target, as one matrix.

Definitions (also written into the report):

* runtimes: ``torch`` is the reference runtime (ONNX's reference evaluator
  with the ``ai.lsnn`` ops computed by ``lsnn.reference`` in PyTorch eager
  mode; the LSTM by onnx's NumPy reference), ``ort`` stock onnxruntime on the
  exported file, ``cpu`` the TVM-compiled artifact;
* data: a checkpoint's own task; for an ONNX file a task's held-out set
  (``--task``) or the arrays of an ``.npz`` (``--inputs``, :mod:`lsnn.bench.data`),
  the first ``heldout_limit`` sequences of either;
* accuracy: held-out decisions correct, per model and runtime (for an ``.npz``
  with ``labels``: the arg-max of the last step's output; none without labels,
  or when a task's classes are not the model's outputs); for regression
  (``l2l-regression``) the held-out mean squared error of the trial predictions
  instead (lower is better), and the learning curve over an episode's trials
  beside the per-episode optimal linear predictor;
* latency: wall time of one call on a batch after ``warmup`` calls, over
  ``repeats`` calls: median, p10, p90. A model's configurations (runtime,
  thread count, batch) are timed in ``repeats`` interleaved rounds, each
  configuration once per round right after one untimed call of its own, so
  that all of them see the same moments of a shared machine and their ratios
  are side by side; per sequence = per call / batch, per
  step = per sequence / T; throughput = sequences per second; at each of
  ``threads`` (0: all cores) for onnxruntime and the compiled CPU target, the
  first count for the others (accuracy and memory too); each row records the
  thread count and the compiled target's options;
* memory: weight bytes (the model's initializers), artifact size (the ONNX
  file, or the compiled library), peak working memory (the largest growth of
  the process's resident memory during the runtime's first call, on a batch
  of held-out inputs, sampled every millisecond: what the runtime allocates
  to run, as the operating system sees it);
* spike statistics: per ALIF layer (each ``ai.lsnn::ALIF`` node, by its name:
  the layer's module path) and over all of them, spikes per inference and
  firing rate per population (LIF, adaptive) on the held-out inputs, from the
  reference runtime, and the distribution of rates over neurons;
* energy: synaptic operations per inference and layer as NeuroBench counts
  them (:mod:`lsnn.bench.energy`), from the graph's weights and the activity
  observed, ``ACs x E_AC + MACs x E_MAC``;
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

from lsnn.targets.artifact import aligned

from .data import Batch, concatenate, npz_data, split, take, task_data
from .energy import E_AC_PJ, E_MAC_PJ, SOURCE
from .layer_stats import LayerStats
from .provenance import provenance, training_budget

SCHEMA = "lsnn-bench/1"
RUNTIMES = ["torch", "ort", "cpu", "cuda", "cortex-m"]

QUICK = {
    "models": [str(MODELS_DIR / name) for name in committed_models()],
    "runtimes": RUNTIMES,
    "batch_sizes": [1, 16],
    "heldout_limit": 64,
    "repeats": 3,
    "warmup": 1,
    "threads": [1, 0],  # thread counts timed; 0: all cores
    "data_dir": None,
    "e_ac_pj": E_AC_PJ,
    "e_mac_pj": E_MAC_PJ,
    "cortex_m_cores": ["cortex-m4", "cortex-m7", "cortex-m55"],
    "cortex_m_heldout": 8,
    "task": None,  # the data of the ONNX files among "models": a task's held-out set,
    "inputs": None,  # or an .npz of inputs (and labels)
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
    base["threads"] = thread_counts(base["threads"])
    bad = set(base["runtimes"]) - set(RUNTIMES)
    if bad:
        raise ConfigError(f"unknown runtime(s) {sorted(bad)}; known: {RUNTIMES}")
    return base


#: the runtimes timed at every configured thread count (the others at the first)
THREADED = ("ort", "cpu")


def thread_counts(value) -> list[int]:
    """The configured thread counts as positive numbers (0: all cores), in order, each once; a bare
    number is a list of one."""
    counts = value if isinstance(value, list) else [value]
    if not counts or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts):
        raise ConfigError(f"threads: expected a list of thread counts (0: all cores), got {value!r}")
    return list(dict.fromkeys(n or os.cpu_count() or 1 for n in counts))


#: what ``lsnn bench --model`` runs when no --targets are given (onnxruntime always runs)
DEFAULT_TARGETS = ["cpu"]


def targets_config(targets: list[str]) -> dict:
    """``runtimes`` and ``cortex_m_cores`` for runtime and target names (``ort``, ``torch``, and the
    compile targets: ``cpu``, ``cuda``, ``cortex-m4``, ...); onnxruntime is always the first."""
    from lsnn.targets.base import TargetError, available

    known = ["ort", "torch"] + available()
    unknown = [t for t in targets if t not in known]
    if unknown:
        raise TargetError(f"unknown target '{unknown[0]}'; choose from {', '.join(known)}")
    cores = [t for t in dict.fromkeys(targets) if t.startswith("cortex-m")]
    runtimes = list(dict.fromkeys(["ort"] + [t for t in targets if not t.startswith("cortex-m")]))
    return {"runtimes": runtimes + (["cortex-m"] if cores else []), "cortex_m_cores": cores}


def models_config(cfg: dict, models: list[str], *, task: str | None = None, inputs: str | None = None,
                  targets: list[str] | None = None) -> dict:
    """``cfg`` for ONNX files ``models`` on one data source (a task or an .npz), run on onnxruntime
    and ``targets`` (default: :data:`DEFAULT_TARGETS`)."""
    if (task is None) == (inputs is None):
        raise ConfigError("give the models' data as one of --task NAME or --inputs FILE.npz" +
                          (", not both" if task is not None else ""))
    for m in models:
        if not Path(m).is_file():
            raise MissingFileError(f"model file not found: {m}")
    if inputs is not None and not Path(inputs).is_file():
        raise MissingFileError(f"inputs file not found: {inputs}")
    if task is not None:
        from lsnn.reference.tasks import task_class

        task_class(task)  # an unknown name fails here, before anything runs
    return {**cfg, "models": [str(Path(m).resolve()) for m in models], "task": task,
            "inputs": None if inputs is None else str(Path(inputs).resolve()),
            **targets_config(DEFAULT_TARGETS if targets is None else targets)}


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
    onnx_path: Path  # the model as given (spikes and states among its outputs)
    weight_bytes: int
    output: str = "Y"  # the output scored and timed
    heldout: list = field(default_factory=list)  # data.Batch
    stats: dict = field(default_factory=dict)
    task_obj: object = None  # the scorer (a Task), or None: no accuracy
    has_alif: bool = False  # the graph holds an ALIF layer (its kernel has a dense variant)
    timed_path: Path | None = None  # the graph compiled and timed: ``output`` its only output

    def prepare_timed(self, work: Path) -> None:
        """Write the graph the runtimes compile and time: the model with ``output`` as its only
        output, as a deployment reads it (the spikes, also an output of the suite's exports for
        verification, are counted from the reference; storing them costs a memory-bound 47 MB a
        call at batch 64 of sMNIST, which two threads do not share)."""
        import onnx

        proto = onnx.load(str(self.onnx_path))
        kept = [o for o in proto.graph.output if o.name == self.output]
        del proto.graph.output[:]
        proto.graph.output.extend(kept)
        self.timed_path = work / f"{self.name}.timed.onnx"
        onnx.save(proto, str(self.timed_path))

    @property
    def metric(self) -> str | None:
        return self.task_obj.metric if self.task_obj is not None else None


def environment(threads: list[int]) -> dict:
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
            "gpu": cuda_device()[0], "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **provenance()}


class CheckpointSource:
    """A checkpoint folder: exported here, measured on its own task's held-out set."""

    def __init__(self, path: Path):
        self.path = path

    def prepare(self, cfg: dict, work: Path) -> ModelEntry:
        import onnx
        from lsnn.compiler.onnx.export import export_checkpoint
        from lsnn.reference import checkpoint
        from lsnn.reference.tasks import task_from_config

        _, config, _ = checkpoint.load(self.path)
        proto = export_checkpoint(self.path, heldout=0)  # the bench measures accuracy itself
        onnx_path = work / f"{self.path.name}.onnx"
        onnx.save(proto, str(onnx_path))
        task = task_from_config(config["task"], cfg.get("data_dir"))
        heldout = [Batch({"X": X.numpy()}, target.numpy())
                   for X, target in task.heldout(max(cfg["batch_sizes"]), cfg["heldout_limit"])]
        return ModelEntry(self.path.name, self.path, config["model"]["kind"], task.name, onnx_path,
                          _weight_bytes(proto), "Y", heldout, stats={"training": training_budget(self.path)},
                          task_obj=task, has_alif=_has_alif(proto))


class OnnxSource:
    """An ONNX file from anywhere (:func:`lsnn.compiler.export` or another exporter), measured on
    the configured data: a task's held-out set (``task``) or the arrays of an ``.npz`` (``inputs``)."""

    def __init__(self, path: Path):
        self.path = path

    def prepare(self, cfg: dict, work: Path) -> ModelEntry:
        from lsnn.compiler.onnx.export import metadata
        from lsnn.compiler.onnx.validate import load, validate

        proto = load(self.path)
        validate(proto)
        label, size = str(self.path), max(cfg["batch_sizes"])
        if cfg.get("inputs"):
            heldout, scorer = npz_data(cfg["inputs"], proto, label, size, cfg["heldout_limit"])
            task, note = f"{Path(cfg['inputs']).name}", None
        elif cfg.get("task"):
            from lsnn.reference.tasks import make_task

            heldout, scorer, note = task_data(make_task(cfg["task"], cfg.get("data_dir")), proto, label, size,
                                              cfg["heldout_limit"])
            task = cfg["task"]
        else:
            raise ConfigError(f"{self.path}: an ONNX model needs data: a task (--task) or an .npz of inputs (--inputs)")
        entry = ModelEntry(self.path.name, self.path, str(metadata(proto).get("lsnn.module", "onnx")), task,
                           self.path, _weight_bytes(proto), proto.graph.output[0].name, heldout, task_obj=scorer,
                           has_alif=_has_alif(proto))
        if note:
            entry.stats["notes"] = [note]
        return entry


def _weight_bytes(proto) -> int:
    return sum(int(np.prod(t.dims)) * 4 for t in proto.graph.initializer)


def _has_alif(proto) -> bool:
    return any(n.op_type == "ALIF" for n in proto.graph.node)


def _reference_stats(entry: ModelEntry, cfg: dict) -> None:
    """Per-layer spikes, synaptic operations and energy (:mod:`lsnn.bench.layer_stats`) and (learning
    to learn) the learning curve, from one run of the reference runtime over the held-out batches."""
    import onnx
    from lsnn.targets.torch_runtime import TorchRuntime

    stats = LayerStats(onnx.load(str(entry.onnx_path)))
    rt = TorchRuntime(stats.model(), cfg["threads"][0])
    task = entry.task_obj
    curve, trials = None, 0
    for b in entry.heldout:
        values = rt.run(b.feeds, [entry.output] + stats.observed)
        stats.add({**b.feeds, **values}, b.sequences, b.steps)
        k = task.curve(values[entry.output], b.target) if task is not None else None
        if k is not None:
            curve, trials = (k if curve is None else curve + k), trials + task.score(values[entry.output], b.target)[1]
    entry.stats.update(steps=entry.heldout[0].steps, **stats.result(cfg["e_ac_pj"], cfg["e_mac_pj"]))
    if curve is not None:  # learning to learn: error per trial of an episode
        entry.stats["learning_curve"] = task.curve_metrics(curve, trials, cfg["heldout_limit"])


def _open(entry: ModelEntry, runtime: str, threads: int, work: Path, model_result: dict):
    """(callable runtime, artifact bytes, compiled target's options); a compile's wall time goes to
    ``model_result``."""
    from lsnn.targets import open_runtime

    if runtime in ("cpu", "cuda"):
        from lsnn.compiler import compile

        options = {"threads": threads} if runtime == "cpu" else {}
        if runtime == "cuda":
            from lsnn.targets.cuda.device import device_arch

            options["arch"] = device_arch()
        t0 = time.perf_counter()
        art = compile(entry.timed_path, runtime, **options)
        model_result.setdefault("compile_seconds", {})[runtime] = time.perf_counter() - t0
        d = art.save(work / f"{entry.name}-{runtime}")
        size = sum(p.stat().st_size for p in d.iterdir())
        return art, size, art.manifest["target"]["options"]
    rt = open_runtime(entry.timed_path, runtime, threads)
    return rt, entry.timed_path.stat().st_size, {}


def _microcontrollers(entry: ModelEntry, cfg: dict, model_result: dict) -> list[dict]:
    """Each Cortex-M core in QEMU: held-out accuracy, instructions per step, footprint."""
    from lsnn.compiler import compile

    whole = concatenate(entry.heldout)
    n = min(cfg["cortex_m_heldout"], whole.sequences)
    first = split(whole, n, n)[0]
    rows = []
    per_step = lambda run: run.instructions / (n * first.steps)  # a step mode call or one whole-mode call
    for core in cfg["cortex_m_cores"]:
        art = compile(entry.timed_path, core)
        Y = art.run(first.feeds, [entry.output])[entry.output]
        acc = _score(entry, [(Y, first.target)])
        fp = art.manifest["footprint"]
        row = {"model": entry.name, "core": core, "board": art.target_obj.board, "sequences": n,
               "steps": first.steps, "accuracy": acc,
               "instructions_per_step": per_step(art.last_run),
               "flash_bytes": fp["model"]["flash_bytes"], "ram_bytes": fp["model"]["ram_bytes"],
               "stack_bytes": fp["stack_bytes_model"], "elf_flash_bytes": fp["elf"]["flash_bytes"],
               "elf_ram_bytes": fp["elf"]["ram_bytes"], "compile_seconds": art.manifest["compile_seconds"]}
        if entry.has_alif:
            dense = compile(entry.timed_path, core, events=False)
            Yd = dense.run(first.feeds, [entry.output])[entry.output]
            row["instructions_per_step_dense"] = per_step(dense.last_run)
            row["dense_outputs_equal"] = bool(np.array_equal(Yd, Y))
        if acc is not None:
            model_result["accuracy"][core] = acc
        rows.append(row)
    return rows


def _score(entry: ModelEntry, outputs: list) -> float | None:
    """The metric over ``(Y, target)`` pairs, or None without a scorer."""
    if entry.task_obj is None:
        return None
    total = count = 0
    for Y, target in outputs:
        c, n = entry.task_obj.score(Y, target)
        total, count = total + c, count + n
    return total / max(count, 1)


def _percentiles(ts: list[float]) -> dict:
    a = np.asarray(ts)
    return {"median": float(np.median(a)), "p10": float(np.percentile(a, 10)), "p90": float(np.percentile(a, 90))}


def run_bench(cfg: dict, out: Path, progress: bool = True) -> dict:
    """Run the matrix and return the results (also written by :func:`lsnn.bench.report.write`)."""
    import torch
    from tqdm import tqdm

    first = cfg["threads"][0]
    torch.set_num_threads(first)
    results = {"schema": SCHEMA, "environment": environment(cfg["threads"]), "config": cfg,
               "energy_source": SOURCE, "models": [], "runs": [], "microcontrollers": [], "unavailable": []}
    runnable = _runnable(cfg, results)
    sources = _sources(cfg, results)
    with tempfile.TemporaryDirectory(prefix="lsnn-bench-") as tmp:
        work = Path(tmp)
        entries = [source.prepare(cfg, work) for source in sources]  # every model and its data checked first
        for e in entries:
            e.prepare_timed(work)
        bar = tqdm(total=len(entries) * (1 + len(runnable)), desc="lsnn bench", disable=not progress,
                   dynamic_ncols=True)
        for e in entries:
            bar.set_postfix_str(f"{e.name}: reference")
            _reference_stats(e, cfg)
            bar.update()
        for e in entries:
            results["unavailable"] += [{"model": e.name, "reason": note} for note in e.stats.pop("notes", [])]
            model_result = {"name": e.name, "kind": e.kind, "task": e.task, "weight_bytes": e.weight_bytes,
                            "metric": e.metric, "accuracy": {}, **e.stats}
            opened: list[Opened] = []  # timed together once all are open
            for r in runnable:
                bar.set_postfix_str(f"{e.name}: {r}")
                if r == "cortex-m":
                    results["microcontrollers"] += _microcontrollers(e, cfg, model_result)
                else:
                    for n in cfg["threads"] if r in THREADED else [first]:
                        rt, size, options = _open(e, r, n, work, model_result)
                        if n == first:
                            _accuracy_and_memory(e, rt, r, model_result)
                        opened.append(Opened(r, n, rt, size, options))
                bar.update()
            results["runs"] += _latencies(e, opened, cfg)
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


def _sources(cfg: dict, results: dict) -> list:
    """The configured models: checkpoint folders that exist and ONNX files (which must load); the
    other paths go to ``results["unavailable"]``."""
    sources = []
    for m in cfg["models"]:
        p = Path(m)
        if (p / "config.json").is_file():
            sources.append(CheckpointSource(p))
        elif p.suffix == ".onnx" or p.is_file():
            sources.append(OnnxSource(p))
        else:
            results["unavailable"].append({"model": m, "reason": "no checkpoint at this path"})
    return sources


def _accuracy_and_memory(e: ModelEntry, rt, runtime: str, model_result: dict) -> None:
    """Held-out metric of ``rt``, and the memory its first call takes."""
    outputs = []
    for n, b in enumerate(e.heldout):
        if n == 0:  # the runtime's first call: its buffers are allocated here
            with RssSampler() as first:
                Y = rt.run(b.feeds, [e.output])[e.output]
            model_result.setdefault("peak_working_memory_bytes", {})[runtime] = {
                "batch": b.sequences, "bytes": int(first.growth)}
        else:
            Y = rt.run(b.feeds, [e.output])[e.output]
        outputs.append((Y, b.target))
    acc = _score(e, outputs)
    if acc is not None:
        model_result["accuracy"][runtime] = acc


#: how long the worker threads of a runtime's pool (TVM's, onnxruntime's) may spin after a call
#: before they sleep, taking a core from whatever runs next
POOL_SPIN_S = 0.1


@dataclass
class Opened:
    """A runtime opened for timing: at ``threads``, with its artifact's size and target options."""
    runtime: str
    threads: int
    rt: object
    size: int
    options: dict


def _latencies(e: ModelEntry, opened: list[Opened], cfg: dict) -> list[dict]:
    """One latency row per opened runtime and configured batch size. After ``warmup`` calls of
    each, ``repeats`` rounds time every (runtime, batch) once, each right after an untimed call of
    its own (which takes what switching costs: a thread pool resized, caches refilled), and after
    :data:`POOL_SPIN_S` when the one before ran on several threads."""
    whole = concatenate(e.heldout)
    feeds = {B: {k: aligned(v) for k, v in take(whole.feeds, np.arange(B) % whole.sequences).items()}
             for B in cfg["batch_sizes"]}  # in 64-byte aligned memory, as a deployment's input buffers
    timed = [(o, B) for o in opened for B in cfg["batch_sizes"]]
    for o, B in timed:
        for _ in range(cfg["warmup"]):
            o.rt.run(feeds[B], [e.output])
    ts: dict[int, list[float]] = {k: [] for k in range(len(timed))}
    for _ in range(cfg["repeats"]):
        for k, (o, B) in enumerate(timed):
            if timed[k - 1][0].threads != 1:  # its workers spin a while after a call: let them sleep
                time.sleep(POOL_SPIN_S)
            o.rt.run(feeds[B], [e.output])
            t0 = time.perf_counter()
            o.rt.run(feeds[B], [e.output])
            ts[k].append(time.perf_counter() - t0)
    rows = []
    steps = whole.steps
    for k, (o, B) in enumerate(timed):
        call = _percentiles(ts[k])
        per_seq = {q: v / B for q, v in call.items()}
        rows.append({"model": e.name, "runtime": o.runtime, "batch": B, "threads": o.threads, "steps": steps,
                     "options": o.options,
                     "latency_per_call_s": call, "latency_per_sequence_s": per_seq,
                     "latency_per_step_s": {q: v / steps for q, v in per_seq.items()},
                     "throughput_seq_per_s": B / call["median"], "artifact_bytes": o.size,
                     "repeats": cfg["repeats"]})
    return rows
