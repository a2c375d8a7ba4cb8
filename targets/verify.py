"""Parity of a runtime or target with the reference, by the definition every target uses.

The reference is the model's source when there is one: a checkpoint folder
(exported here, then compared with its PyTorch module) or a PyTorch module
(``LSNN``, ``LIFNet``, ``LSTMNet``), run on the same inputs as the file under
test. An ONNX file given alone has no source: its reference is its own
interpretation (``ai.lsnn`` ops computed by :mod:`lsnn.reference`), which
checks the runtime but not the export; the export is then checked by the
held-out metric recorded in the file at export (:mod:`lsnn.reference.heldout`).

Each batch is compared by the parity definition of :mod:`lsnn.targets.parity`
(the spike walk up to the first divergence, rounding flips, NaN never agreeing).

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

from lsnn.compiler.onnx.validate import ModelError
from lsnn.reference.errors import ConfigError
from lsnn.reference.heldout import BATCH_SIZE, HeldoutMetric, Tally, default_examples, record_of

from .parity import MARGIN, RTOL, BatchResult, Probe, add_probes, compare

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
        from lsnn.targets import open_runtime

        self.label = ("the file's own interpretation (torch runtime), not its source: give its checkpoint "
                      "(as MODEL or --reference) to compare with it")
        self.runtime = open_runtime(probed, "torch", threads)

    def run(self, feeds, names):
        return self.runtime.run(feeds, names)

    def expected(self, measured):
        return None  # the file's own metric: it agrees whatever the export got wrong


class ModuleReference(Reference):
    """A PyTorch module (the source of the export), run on the same inputs; what it computes is
    named as the file's tensors by :meth:`named` (each kind of module says how)."""

    def __init__(self, module, label: str):
        self.module, self.label = module, label

    def named(self, feeds: dict[str, np.ndarray]) -> dict:
        """The module's tensors (torch) under the names of the file's outputs and probes."""
        raise NotImplementedError

    def run(self, feeds, names):
        import torch

        with torch.no_grad():
            named = self.named(feeds)
        missing = [n for n in names if n not in named]
        if missing:
            raise ModelError(f"output(s) {missing} of the file under test have no counterpart in the reference "
                             f"{self.label} (its outputs: {sorted(named)})")
        return {n: named[n].cpu().numpy() for n in names}

    def expected(self, measured):
        return measured


class NetReference(ModuleReference):
    """One of the suite's networks (``LSNN``, ``LIFNet``, ``LSTMNet``): its :class:`NetOutput` names
    its outputs and its one ALIF layer's ``Z``, ``V``, ``A``, from a zero state (verify feeds a
    streaming model's state inputs with zeros)."""

    def __init__(self, module, label: str, probes: list[Probe]):
        if len(probes) > 1:
            raise ModelError(f"the file under test has {len(probes)} ALIF nodes; the reference {label} has one")
        super().__init__(module, label)
        self.probes = probes

    def named(self, feeds):
        import torch

        from lsnn.compiler.onnx.export import module_outputs

        out = self.module(torch.from_numpy(next(iter(feeds.values()))))
        named = module_outputs(self.module, out)
        for p in self.probes:
            named.update({p.Z: out.Z, p.V: out.V, p.A: out.A})
        return named


class LayerReference(ModuleReference):
    """Any module built from :class:`lsnn.reference.ALIF` / ``LI`` layers and PyTorch modules, as
    ``lsnn.compiler.export`` exports it: called with the file's inputs in order, its outputs are
    the file's outputs in order, and each ALIF node is the layer of the module path it is named
    after, whose spikes a forward hook takes (and ``V``, ``A`` from the layer's own inputs)."""

    def __init__(self, module, label: str, probes: list[Probe], inputs: list[str], outputs: list[str]):
        from lsnn.reference import ALIF

        super().__init__(module, label)
        layers = dict(module.named_modules())
        alifs = sorted(n for n, m in layers.items() if isinstance(m, ALIF))
        for p in probes:
            if not isinstance(layers.get(p.node), ALIF):
                raise ModelError(f"ALIF node '{p.node}' of the file under test has no ALIF layer of that name in "
                                 f"the reference {label} (its ALIF layers: {', '.join(alifs) or 'none'})")
        self.layers = [(p, layers[p.node]) for p in probes]
        self.inputs, self.outputs = inputs, outputs

    @staticmethod
    def _capture(probe: Probe, into: dict):
        def hook(layer, args, kwargs, output):
            X = args[0] if args else kwargs["X"]
            state = args[1] if len(args) > 1 else kwargs.get("state")
            seq = layer.sequence(X, state)
            into.update({probe.Z: output[0] if isinstance(output, tuple) else output, probe.V: seq.V, probe.A: seq.A})
        return hook

    def named(self, feeds):
        import torch

        captured: dict = {}
        device = next(self.module.parameters(), torch.empty(0)).device  # where the user keeps the module
        hooks = [layer.register_forward_hook(self._capture(p, captured), with_kwargs=True) for p, layer in self.layers]
        try:
            out = self.module(*(torch.from_numpy(feeds[n]).to(device) for n in self.inputs))
        finally:
            for h in hooks:
                h.remove()
        for p, _ in self.layers:
            if p.Z not in captured:
                raise ModelError(f"ALIF layer '{p.node}' of the reference {self.label} did not run in its forward")
        leaves = _tensors(out)
        if len(leaves) != len(self.outputs):
            raise ModelError(f"the reference {self.label} returns {len(leaves)} tensor(s); the file under test has "
                             f"{len(self.outputs)} output(s) {self.outputs}")
        return {**dict(zip(self.outputs, leaves)), **captured}


def _tensors(out) -> list:
    """A forward's result as the exporter flattens it into graph outputs: its tensors in order."""
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _tensors(o)]
    return [out]


def module_reference(module, label: str, probes: list[Probe], model: onnx.ModelProto) -> ModuleReference:
    """The reference of ``module`` for the file ``model`` (as written, before probes): one of the
    suite's networks by its output, any other module by its layers."""
    from lsnn.reference.modules import MODELS

    if isinstance(module, tuple(MODELS.values())):
        return NetReference(module, label, probes)
    return LayerReference(module, label, probes, graph_inputs(model), [o.name for o in model.graph.output])


def graph_inputs(model: onnx.ModelProto) -> list[str]:
    """The names of the model's inputs (initializers are no inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name not in inits]


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
    ref = module_reference(source.module, f"PyTorch, {source.name}", probes, proto) if source \
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


def dataset_entry(r: BatchResult, has_probes: bool) -> dict:
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
        datasets[name] = dataset_entry(r, bool(subj.probes))
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
             *([f"  inputs: {report['inputs']}"] if report.get("inputs") else []),
             *(f"  note: {note}" for note in report.get("notes", [])),
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
