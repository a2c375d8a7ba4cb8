"""Parity of a runtime or target with the reference, by the definition every target uses.

The reference is the model's source when there is one: a checkpoint folder
(exported here, then compared with its PyTorch module) or a PyTorch module
(``LSNN``, ``LIFNet``, ``LSTMNet``), run on the same inputs as the file under
test. An ONNX file given alone has no source: its reference is its own
interpretation (``ai.lsnn`` ops computed by :mod:`lsnn.reference`), which
checks the runtime but not the export; the export is then checked by the
held-out metric recorded in the file at export (:mod:`lsnn.reference.heldout`).

Spiking dynamics are chaotic: one rounding difference near threshold flips a
spike and everything after it diverges. So, per sequence, the steps are
walked up to the first step where any spike of any ALIF node differs:

* before it, ``V``, ``A`` and every time-major output (the readout) must
  agree within ``rtol`` (fp32: 1e-4), the error measured relative to the
  largest magnitude of the reference tensor;
* at it, each differing neuron's reference margin ``|v - A| / A`` must be
  below ``margin`` (1e-3): a rounding flip. A larger margin is a failure;
* after it nothing is compared step by step; spike agreement over the whole
  run, the readout error and the agreement of predictions are reported.

Models without ALIF nodes (the LSTM) compare every output at every step.
NaN (or an infinity) never counts as agreement: a non-finite value in any
output of either side fails its dataset, and a spike compared with NaN differs.

On held-out data the task's metric measured on the runtime must agree with
the expected one (the source module's on the same examples, or the one
recorded at export): accuracy within one decision, mse within a relative
1e-3 (:meth:`lsnn.reference.heldout.HeldoutMetric.difference`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from lsnn.compiler.onnx.schema import DOMAIN
from lsnn.compiler.onnx.validate import ModelError
from lsnn.reference.errors import ConfigError
from lsnn.reference.heldout import BATCH_SIZE, HeldoutMetric, Tally, default_examples, record_of

RTOL = 1e-4
MARGIN = 1e-3


@dataclass
class Probe:
    node: str
    Z: str
    V: str
    A: str


def add_probes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[Probe]]:
    """A copy of ``model`` whose ALIF nodes name their ``Z``, ``V`` and ``A`` outputs, each
    exposed as a graph output, so that every runtime and target returns them unchanged."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    probes = []
    for i, node in enumerate(out.graph.node):
        if node.domain == DOMAIN and node.op_type == "ALIF":
            label = node.name or f"alif_{i}"
            while len(node.output) < 3:
                node.output.append("")
            for k, tag in ((1, "V"), (2, "A")):
                if not node.output[k]:
                    node.output[k] = f"{label}.probe.{tag}"
            probes.append(Probe(label, node.output[0], node.output[1], node.output[2]))
    have = {o.name for o in out.graph.output}
    out.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                            for p in probes for n in (p.Z, p.V, p.A) if n not in have)
    return out, probes


# -- comparing one batch -----------------------------------------------------------------------

def _norm_err(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """max |x - y| / max |y| over the entries where mask holds (broadcast over trailing dims);
    infinite where a compared entry is not finite (NaN never agrees)."""
    if mask is not None:
        m = np.broadcast_to(mask.reshape(mask.shape + (1,) * (y.ndim - mask.ndim)), y.shape)
        if not m.any():
            return 0.0
        x, y = x[m], y[m]
    if not y.size:
        return 0.0
    diff = np.abs(x - y)
    if not np.isfinite(diff).all():
        return float("inf")
    scale = float(np.abs(y).max())
    return float(diff.max() / scale) if scale > 0 else float(diff.max())


def _non_finite(side: str, values: dict, names: list[str], T: int, B: int) -> list[str]:
    """One failure per output of ``values`` holding NaN or an infinity, naming where the first is."""
    failures = []
    for name in names:
        bad = ~np.isfinite(values[name])
        if not bad.any():
            continue
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        what = "NaN" if np.isnan(values[name][at]) else "an infinity"
        where = f"step {at[0]}, sequence {at[1]}" if values[name].ndim >= 2 and values[name].shape[:2] == (T, B) \
            else f"index {list(at)}"
        failures.append(f"output '{name}': the {side} gives {what} at {where} "
                        f"({int(bad.sum())} non-finite values; NaN never counts as agreement)")
    return failures


@dataclass
class BatchResult:
    sequences: int = 0
    steps: int = 0
    diverged: int = 0
    first_divergence: list = field(default_factory=list)  # per sequence, None if never
    err_V: float = 0.0
    err_A: float = 0.0
    err_out: float = 0.0  # time-major outputs before divergence
    readout_abs_err: float = 0.0  # whole run
    spikes_equal: int = 0
    spikes_total: int = 0
    worst_margin: float = 0.0
    failures: list = field(default_factory=list)

    def merge(self, o: "BatchResult") -> None:
        self.sequences += o.sequences
        self.steps = max(self.steps, o.steps)
        self.diverged += o.diverged
        self.first_divergence += o.first_divergence
        for k in ("err_V", "err_A", "err_out", "readout_abs_err", "worst_margin"):
            setattr(self, k, max(getattr(self, k), getattr(o, k)))
        self.spikes_equal += o.spikes_equal
        self.spikes_total += o.spikes_total
        self.failures += o.failures


def _first_divergence(ref: dict, got: dict, probes: list[Probe], res: BatchResult, T: int, B: int) -> np.ndarray:
    """Per sequence, the first step where a spike of any ALIF node differs (``T`` if none);
    a spike compared with NaN differs (``!=`` holds)."""
    first = np.full(B, T)
    for p in probes:
        differ = (ref[p.Z] != got[p.Z]).reshape(T, B, -1).any(-1)  # [T, B]
        first = np.minimum(first, np.where(differ.any(0), differ.argmax(0), T))
        res.spikes_equal += int((ref[p.Z] == got[p.Z]).sum())
        res.spikes_total += ref[p.Z].size
    return first


def _check_flips(ref: dict, got: dict, probes: list[Probe], first: np.ndarray, res: BatchResult,
                 margin: float, T: int) -> None:
    """At each sequence's first divergence, every differing neuron must be a rounding flip."""
    for p in probes:
        for b in np.nonzero(first < T)[0]:
            t = first[b]
            idx = np.nonzero(ref[p.Z][t, b] != got[p.Z][t, b])[0]
            if not idx.size:
                continue
            v, A = ref[p.V][t, b, idx], ref[p.A][t, b, idx]
            m = np.abs(v - A) / np.abs(A)
            res.worst_margin = max(res.worst_margin, float(np.nan_to_num(m, nan=np.inf).max()))
            bad = ~(m < margin)  # a NaN margin is no rounding flip
            if bad.any():
                k = int(np.argmax(bad))
                res.failures.append(f"node '{p.node}', sequence {b}, step {t}: neuron {int(idx[k])} spikes "
                                    f"differently with margin |v-A|/A = {m[k]:.2e}, not < {margin:g} "
                                    f"(not a rounding flip)")


def _compare_outputs(ref: dict, got: dict, outputs: list[str], first: np.ndarray, res: BatchResult,
                     T: int, B: int) -> None:
    before = np.arange(T)[:, None] < first[None, :]  # [T, B]
    for name in outputs:
        r, g = ref[name], got[name]
        if r.shape != g.shape:
            res.failures.append(f"output '{name}': shape {list(g.shape)}, reference {list(r.shape)}")
            continue
        if r.ndim >= 2 and r.shape[0] == T and r.shape[1] == B:
            res.err_out = max(res.err_out, _norm_err(g, r, before))
            res.readout_abs_err = max(res.readout_abs_err, float(np.abs(g - r).max()) if r.size else 0.0)
        else:  # final state: only where nothing diverged
            keep = first == T
            if keep.any() and r.ndim >= 1:
                axis = 1 if r.ndim == 3 else 0  # LSTM states are [1, B, H]
                res.err_out = max(res.err_out, _norm_err(np.compress(keep, g, axis), np.compress(keep, r, axis)))


def compare(ref: dict, got: dict, probes: list[Probe], outputs: list[str], rtol: float = RTOL,
            margin: float = MARGIN) -> BatchResult:
    """Compare one batch by the parity definition (module docstring)."""
    T = ref[outputs[0]].shape[0]
    B = ref[probes[0].Z].shape[1] if probes else ref[outputs[0]].shape[1]
    res = BatchResult(sequences=B, steps=T)
    names = list(dict.fromkeys(outputs + [n for p in probes for n in (p.Z, p.V, p.A)]))
    for side, values in (("runtime", got), ("reference", ref)):
        res.failures += _non_finite(side, values, names, T, B)
    first = _first_divergence(ref, got, probes, res, T, B)
    before = np.arange(T)[:, None] < first[None, :]
    for p in probes:
        res.err_V = max(res.err_V, _norm_err(got[p.V], ref[p.V], before))
        res.err_A = max(res.err_A, _norm_err(got[p.A], ref[p.A], before))
    _check_flips(ref, got, probes, first, res, margin, T)
    _compare_outputs(ref, got, outputs, first, res, T, B)
    res.diverged = int((first < T).sum())
    res.first_divergence = [int(t) if t < T else None for t in first]
    for what, err in (("V", res.err_V), ("A", res.err_A), ("outputs", res.err_out)):
        if not err <= rtol:
            res.failures.append(f"{what} differ before the first spike divergence: relative error {err:.2e} > {rtol:g}")
    return res


# -- the reference: the model's source, or the file's own interpretation ----------------------

class Reference:
    """What the runtime is compared with: named outputs for the same feeds, and the held-out
    metric the runtime's must agree with."""

    label: str

    def run(self, feeds: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def expected(self, measured: HeldoutMetric) -> HeldoutMetric | None:
        """The held-out metric the runtime's must agree with, given the reference's own
        measurement on the same examples; None when the reference is no truth for it."""
        raise NotImplementedError


class FileReference(Reference):
    """The file under test as the ``torch`` runtime interprets it: no source to compare with."""

    def __init__(self, probed: onnx.ModelProto, threads: int):
        from lsnn.compiler.onnx.export import metadata
        from lsnn.targets import open_runtime

        self.label = ("the file's own interpretation (torch runtime), not its source: give its checkpoint "
                      "(as MODEL or --reference) to compare with it")
        self.runtime = open_runtime(probed, "torch", threads)

    def run(self, feeds, names):
        return self.runtime.run(feeds, names)

    def expected(self, measured):
        return None  # the file's own metric: it agrees whatever the export got wrong


class ModuleReference(Reference):
    """A PyTorch module (the source of the export), run on the same inputs from a zero state
    (verify feeds a streaming model's state inputs with zeros)."""

    def __init__(self, module, label: str, probes: list[Probe]):
        if len(probes) > 1:
            raise ModelError(f"the file under test has {len(probes)} ALIF nodes; the reference {label} has one")
        self.module, self.label, self.probes = module, label, probes

    def run(self, feeds, names):
        import torch

        from lsnn.compiler.onnx.export import module_outputs

        X = torch.from_numpy(next(iter(feeds.values())))
        with torch.no_grad():
            out = self.module(X)
        named = module_outputs(self.module, out)
        for p in self.probes:
            named.update({p.Z: out.Z, p.V: out.V, p.A: out.A})
        missing = [n for n in names if n not in named]
        if missing:
            raise ModelError(f"output(s) {missing} of the file under test have no counterpart in the reference "
                             f"{self.label} (its outputs: {sorted(named)})")
        return {n: named[n].numpy() for n in names}

    def expected(self, measured):
        return measured


# -- what is verified --------------------------------------------------------------------------

@dataclass
class Subject:
    """The file under test (probed), its reference, its task and the held-out metric recorded in it."""

    label: str
    model: onnx.ModelProto
    probed: onnx.ModelProto
    probes: list[Probe]
    reference: Reference
    task: object | None  # lsnn.reference.tasks.Task
    record: HeldoutMetric | None
    why_no_record: str


def _is_module(x) -> bool:
    import torch

    return isinstance(x, torch.nn.Module)


@dataclass
class Source:
    """Where a model comes from: a PyTorch module, with its checkpoint's configuration."""

    module: object
    config: dict | None
    name: str  # "checkpoint DIR" or "the LSNN module given"


def _source(x) -> Source | None:
    """The source of a checkpoint folder or PyTorch module; None for an ONNX model."""
    if _is_module(x):
        return Source(x.eval(), None, f"the {type(x).__name__} module given")
    if isinstance(x, (str, Path)) and Path(x).is_dir():
        from lsnn.reference import checkpoint

        module, config, _ = checkpoint.load(x)
        return Source(module, config, f"checkpoint {x}")
    return None


def _export_source(x, module) -> onnx.ModelProto:
    from lsnn.compiler.onnx.export import export, export_checkpoint

    return export(module) if _is_module(x) else export_checkpoint(x, heldout=0)


def _task(task, configs: list, data_dir: str | None):
    """The task named or given (a Task), else the one of the first configuration that names one."""
    from lsnn.reference.tasks import Task, make_task, task_from_config

    if isinstance(task, Task):
        return task
    for cfg in configs:
        params = cfg.get("task") if isinstance(cfg, dict) else None
        if isinstance(params, dict) and (task is None or params.get("name") == task):
            return task_from_config(params, data_dir)
    return make_task(task, data_dir=data_dir) if task is not None else None


def subject(model, reference=None, task=None, data_dir: str | None = None, threads: int = 1) -> Subject:
    """What ``verify`` compares: ``model`` (an ONNX file or ``ModelProto``, a checkpoint folder, a
    PyTorch module) as exported, with the reference from ``reference`` (a checkpoint folder or a
    module), else from ``model``'s own source, else the file's interpretation."""
    from lsnn.compiler.onnx.export import metadata
    from lsnn.compiler.onnx.validate import load

    source = _source(model)
    proto = _export_source(model, source.module) if source else load(model)
    label = f"the export of {source.name}" if source else \
        (str(model) if not isinstance(model, onnx.ModelProto) else "<in memory>")
    if reference is not None:
        source = _source(reference)
        if source is None:
            raise ConfigError(f"reference {reference}: not a checkpoint folder or a PyTorch module")
    probed, probes = add_probes(proto)
    ref = ModuleReference(source.module, f"PyTorch, {source.name}", probes) if source \
        else FileReference(probed, threads)
    meta = metadata(proto)
    configs = [source.config if source else None, meta.get("lsnn.config")]
    return Subject(label, proto, probed, probes, ref, _task(task, configs, data_dir), *record_of(meta))


# -- the data ----------------------------------------------------------------------------------

def _feeds(model: onnx.ModelProto, X: np.ndarray) -> dict[str, np.ndarray]:
    """``X`` for the first graph input, zeros for the state inputs of a streaming model."""
    inits = {i.name for i in model.graph.initializer}
    ins = [vi for vi in model.graph.input if vi.name not in inits]
    feeds = {ins[0].name: X}
    B = X.shape[1]
    for vi in ins[1:]:
        dims = [d.dim_value if d.HasField("dim_value") else B for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = np.zeros(dims, np.float32)
    return feeds


def _n_in(model: onnx.ModelProto) -> int:
    inits = {i.name for i in model.graph.initializer}
    vi = next(v for v in model.graph.input if v.name not in inits)
    dims = vi.type.tensor_type.shape.dim
    if len(dims) != 3 or not dims[2].HasField("dim_value"):
        raise ModelError(f"input '{vi.name}' must be [T, B, n_in] with a fixed n_in to verify on random data")
    return dims[2].dim_value


def datasets(model: onnx.ModelProto, task=None, limit: int | None = None, batch_size: int = BATCH_SIZE,
             random_steps: int = 300, seed: int = 0):
    """``(name, X, target)`` batches: the task's held-out data (when known) and random inputs."""
    if task is not None:
        for X, target in task.heldout(batch_size, limit):
            yield "heldout", X.numpy(), target.numpy()
    rng = np.random.default_rng(seed)
    n_in = _n_in(model)
    yield "random-spikes", (rng.random((random_steps, 8, n_in)) < 0.1).astype(np.float32), None
    yield "random-currents", rng.normal(0, 1, (random_steps, 8, n_in)).astype(np.float32), None


def _heldout_plan(subj: Subject, limit: int | None, batch_size: int) -> tuple[int | None, int]:
    """``(examples, batch size)`` of the held-out data: those of the metric recorded in the
    file (so that the same examples are drawn), else the defaults."""
    if subj.record is not None:
        return (subj.record.examples if limit is None else limit), subj.record.batch_size
    if limit is None and subj.task is not None:
        limit = default_examples(subj.task)
    return limit, batch_size


# -- running -----------------------------------------------------------------------------------

def _decisions(task, Y: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One prediction and its answer per decision (a class), or per trial (a value, regression)."""
    if task.metric == "mse":
        pred, answer = task.predictions(Y, target)
        return pred.ravel(), answer.ravel()
    from lsnn.reference.tasks import decisions

    pred, answer = decisions(Y, target)
    return pred.numpy(), answer.numpy()


@dataclass
class Run:
    """What running every dataset through both sides gave."""

    results: dict = field(default_factory=dict)  # dataset -> BatchResult
    predictions: dict = field(default_factory=dict)  # dataset -> [(reference, runtime, answers)]
    tally_reference: Tally | None = None
    tally_runtime: Tally | None = None


def _run(subj: Subject, rt, runtime: str, batches: list, batch_size: int, rtol: float, margin: float,
         progress: bool) -> Run:
    from tqdm import tqdm

    outputs = [o.name for o in subj.model.graph.output]
    names = list(dict.fromkeys(outputs + [n for p in subj.probes for n in (p.Z, p.V, p.A)]))
    readout = "Y" if "Y" in outputs else outputs[0]
    run = Run()
    if subj.task is not None:
        run.tally_reference, run.tally_runtime = Tally(subj.task, batch_size), Tally(subj.task, batch_size)
    for name, X, target in tqdm(batches, desc=f"verify {runtime}", disable=not progress, dynamic_ncols=True):
        feeds = _feeds(subj.model, X)
        ref = subj.reference.run(feeds, names)
        got = rt.run(feeds, names)
        run.results.setdefault(name, BatchResult()).merge(compare(ref, got, subj.probes, outputs, rtol, margin))
        if target is not None:
            run.tally_reference.add(X, target, ref[readout])
            run.tally_runtime.add(X, target, got[readout])
            pr, answers = _decisions(subj.task, ref[readout], target)
            pg, _ = _decisions(subj.task, got[readout], target)
            run.predictions.setdefault(name, []).append((pr, pg, answers))
    return run


def _open(subj: Subject, runtime, threads: int):
    """The runtime under test and its name; a ``Runtime`` object is taken as already compiled
    from ``add_probes(model)[0]`` (e.g. on a machine without a compiler)."""
    from lsnn.targets import Runtime, open_runtime

    if isinstance(runtime, Runtime):
        return runtime, getattr(runtime, "target", runtime.name)
    return open_runtime(subj.probed, runtime, threads), runtime


# -- the held-out metric and the report ---------------------------------------------------------

def _check(expected: HeldoutMetric, source: str, measured: HeldoutMetric) -> dict:
    entry = {"expected": expected.to_json(), "expected_from": source, "measured": measured.to_json()}
    why = expected.same_examples(measured)
    if why:
        return {**entry, "status": "not checked", "message": f"held-out metric {source} not checked: {why}"}
    diff = expected.difference(measured)
    message = f"held-out {measured.describe()} on the runtime, expected {expected.describe()} {source}"
    return {**entry, "status": "fail" if diff else "pass", "message": message + (f": {diff}" if diff else "")}


def check_metric(subj: Subject, run: Run) -> list[dict]:
    """The runtime's held-out metric against each expected one (module docstring): the
    reference's on the same examples (when it is the source) and the one recorded at export."""
    measured = run.tally_runtime.result() if run.tally_runtime and run.tally_runtime.examples else None
    expected = []
    if measured is not None:
        from_reference = subj.reference.expected(run.tally_reference.result())
        if from_reference is not None:
            expected.append((from_reference, "from the reference on the same examples"))
        if subj.record is not None:
            expected.append((subj.record, "recorded at export"))
    if expected:
        return [_check(e, source, measured) for e, source in expected]
    why = ["no held-out data was run (no task is known: pass --task)"] if measured is None else []
    why += [subj.why_no_record] if subj.record is None else []
    return [{"status": "not checked", "message": "held-out metric not checked: " + "; ".join(why)}]


def _prediction_entry(task, preds: list) -> dict:
    pr, pg, answers = (np.concatenate([p[i] for p in preds]) for i in range(3))
    if task.metric == "mse":
        # a trial's prediction agrees when it is within 1e-3 (relative to the answers' scale)
        tol = 1e-3 * max(1.0, float(np.abs(answers).max()))
        return {"decisions": int(answers.size), "prediction_agreement": float((np.abs(pr - pg) <= tol).mean()),
                "max_abs_prediction_difference": float(np.abs(pr - pg).max()),
                "mse_reference": float(((pr - answers) ** 2).mean()),
                "mse_runtime": float(((pg - answers) ** 2).mean())}
    return {"decisions": int(answers.size), "prediction_agreement": float((pr == pg).mean()),
            "accuracy_reference": float((pr == answers).mean()), "accuracy_runtime": float((pg == answers).mean())}


def _dataset_entry(r: BatchResult, has_probes: bool) -> dict:
    fd = [t for t in r.first_divergence if t is not None]
    return {
        "sequences": r.sequences, "steps": r.steps,
        "sequences_diverged": r.diverged,
        "first_divergence_step": min(fd) if fd else None,
        "median_first_divergence_step": float(np.median(fd)) if fd else None,
        "max_rel_err_V_before_divergence": r.err_V if has_probes else None,
        "max_rel_err_A_before_divergence": r.err_A if has_probes else None,
        "max_rel_err_outputs_before_divergence": r.err_out,
        "max_abs_err_readout": r.readout_abs_err,
        "spike_agreement": r.spikes_equal / r.spikes_total if r.spikes_total else None,
        "worst_flip_margin": r.worst_margin if fd else None,
        "failures": r.failures[:20], "passed": not r.failures,
    }


def _report(subj: Subject, runtime: str, run: Run, rtol: float, margin: float) -> dict:
    datasets = {}
    for name, r in run.results.items():
        datasets[name] = _dataset_entry(r, bool(subj.probes))
        if name in run.predictions:
            datasets[name].update(_prediction_entry(subj.task, run.predictions[name]))
    metric = check_metric(subj, run)
    return {"model": subj.label, "runtime": runtime, "reference": subj.reference.label, "rtol": rtol,
            "margin": margin, "task": subj.task.name if subj.task else None,
            "alif_nodes": [p.node for p in subj.probes], "datasets": datasets, "heldout_checks": metric,
            "passed": all(d["passed"] for d in datasets.values()) and all(m["status"] != "fail" for m in metric)}


def verify(model, runtime="ort", *, reference=None, task=None, data_dir: str | None = None,
           limit: int | None = None, batch_size: int = BATCH_SIZE, threads: int = 1, rtol: float = RTOL,
           margin: float = MARGIN, progress: bool = True) -> dict:
    """Run ``runtime`` (a name, or a compiled ``Runtime``) and the reference on the same inputs and
    compare them (module docstring). ``model``: an ONNX file or ``ModelProto``, a checkpoint folder or
    a PyTorch module; ``reference``: a checkpoint folder or module (default: ``model``'s own source);
    ``task``: a task name or ``Task`` (default: the model's)."""
    subj = subject(model, reference, task, data_dir, threads)
    rt, name = _open(subj, runtime, threads)
    limit, batch_size = _heldout_plan(subj, limit, batch_size)
    batches = list(datasets(subj.model, subj.task, limit, batch_size))
    run = _run(subj, rt, name, batches, batch_size, rtol, margin, progress)
    return _report(subj, name, run, rtol, margin)


# -- the report as text --------------------------------------------------------------------------

def _fmt(x, spec=".2e") -> str:
    return "-" if x is None else format(x, spec)


# (heading, width, the entry's value, format)
_COLUMNS = [
    ("seqs", 5, lambda d: d["sequences"], "d"),
    ("steps", 6, lambda d: d["steps"], "d"),
    ("diverged", 8, lambda d: d["sequences_diverged"], "d"),
    ("first div", 9, lambda d: d["first_divergence_step"], "d"),
    ("err V", 9, lambda d: d["max_rel_err_V_before_divergence"], ".2e"),
    ("err A", 9, lambda d: d["max_rel_err_A_before_divergence"], ".2e"),
    ("err out", 9, lambda d: d["max_rel_err_outputs_before_divergence"], ".2e"),
    ("spikes eq", 9, lambda d: d["spike_agreement"], ".5f"),
    ("pred agree", 10, lambda d: d.get("prediction_agreement"), ".4f"),
    ("{m} ref", 7, lambda d: d.get("accuracy_reference", d.get("mse_reference")), ".4f"),
    ("{m} rt", 7, lambda d: d.get("accuracy_runtime", d.get("mse_runtime")), ".4f"),
]


def format_report(report: dict) -> str:
    m = "mse" if any("mse_reference" in d for d in report["datasets"].values()) else "acc"
    lines = [f"parity of {report['runtime']} on {report['model']}",
             f"  reference: {report['reference']}",
             f"  ALIF nodes: {', '.join(report['alif_nodes']) or 'none'}; tolerance: relative {report['rtol']:g} "
             f"before the first spike divergence, flip margin < {report['margin']:g}",
             f"  {'data':16s} " + " ".join(f"{h.format(m=m):>{w}s}" for h, w, _, _ in _COLUMNS) + "  result"]
    for name, d in report["datasets"].items():
        cells = " ".join(f"{_fmt(get(d), spec):>{w}s}" for _, w, get, spec in _COLUMNS)
        lines.append(f"  {name:16s} {cells}  {'PASS' if d['passed'] else 'FAIL'}")
        lines += [f"    - {msg}" for msg in d["failures"]]
    for m in report["heldout_checks"]:
        lines.append(f"  {m['message']}" + ("" if m["status"] == "not checked" else f": {m['status'].upper()}"))
    lines.append("PASS" if report["passed"] else "FAIL")
    return "\n".join(lines)
