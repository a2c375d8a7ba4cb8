"""Parity of a runtime or target with the reference, by the definition every target uses.

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
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from lsnn.compiler.onnx.schema import DOMAIN
from lsnn.compiler.onnx.validate import ModelError

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


def _norm_err(x: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None) -> float:
    """max |x - y| / max |y| over the entries where mask holds (broadcast over trailing dims)."""
    if mask is not None:
        m = np.broadcast_to(mask.reshape(mask.shape + (1,) * (y.ndim - mask.ndim)), y.shape)
        if not m.any():
            return 0.0
        x, y = x[m], y[m]
    scale = float(np.abs(y).max()) if y.size else 0.0
    return float(np.abs(x - y).max() / scale) if scale > 0 else float(np.abs(x - y).max())


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


def compare(ref: dict, got: dict, probes: list[Probe], outputs: list[str], rtol: float = RTOL,
            margin: float = MARGIN) -> BatchResult:
    """Compare one batch by the parity definition (module docstring)."""
    some = ref[outputs[0]]
    T = some.shape[0]
    B = ref[probes[0].Z].shape[1] if probes else some.shape[1]
    res = BatchResult(sequences=B, steps=T)
    first = np.full(B, T)
    for p in probes:
        differ = (ref[p.Z] != got[p.Z]).reshape(T, B, -1).any(-1)  # [T, B]
        has = differ.any(0)
        first = np.minimum(first, np.where(has, differ.argmax(0), T))
        res.spikes_equal += int((ref[p.Z] == got[p.Z]).sum())
        res.spikes_total += ref[p.Z].size
    before = np.arange(T)[:, None] < first[None, :]  # [T, B]
    for p in probes:
        res.err_V = max(res.err_V, _norm_err(got[p.V], ref[p.V], before))
        res.err_A = max(res.err_A, _norm_err(got[p.A], ref[p.A], before))
        for b in np.nonzero(first < T)[0]:
            t = first[b]
            idx = np.nonzero(ref[p.Z][t, b] != got[p.Z][t, b])[0]
            if not idx.size:
                continue
            v, A = ref[p.V][t, b, idx], ref[p.A][t, b, idx]
            m = np.abs(v - A) / np.abs(A)
            res.worst_margin = max(res.worst_margin, float(m.max()))
            if (m >= margin).any():
                j = int(idx[m.argmax()])
                res.failures.append(f"node '{p.node}', sequence {b}, step {t}: neuron {j} spikes differently with "
                                    f"margin |v-A|/A = {m.max():.2e} >= {margin:g} (not a rounding flip)")
    for name in outputs:
        r, g = ref[name], got[name]
        if r.shape != g.shape:
            res.failures.append(f"output '{name}': shape {list(g.shape)}, reference {list(r.shape)}")
            continue
        if r.ndim >= 2 and r.shape[0] == T and r.shape[1] == B:
            res.err_out = max(res.err_out, _norm_err(g, r, before))
            res.readout_abs_err = max(res.readout_abs_err, float(np.abs(g - r).max()))
        else:  # final state: only where nothing diverged
            keep = first == T
            if keep.any() and r.ndim >= 1:
                axis = 1 if r.ndim == 3 else 0  # LSTM states are [1, B, H]
                res.err_out = max(res.err_out, _norm_err(np.compress(keep, g, axis), np.compress(keep, r, axis)))
    res.diverged = int((first < T).sum())
    res.first_divergence = [int(t) if t < T else None for t in first]
    for what, err in (("V", res.err_V), ("A", res.err_A), ("outputs", res.err_out)):
        if err > rtol:
            res.failures.append(f"{what} differ before the first spike divergence: relative error {err:.2e} > {rtol:g}")
    return res


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


def datasets(model: onnx.ModelProto, task=None, limit: int | None = None, batch_size: int = 64,
             random_steps: int = 300, seed: int = 0):
    """``(name, X, target)`` batches: the task's held-out data (when known) and random inputs."""
    if task is not None:
        for X, target in task.heldout(batch_size, limit):
            yield "heldout", X.numpy(), target.numpy()
    rng = np.random.default_rng(seed)
    n_in = _n_in(model)
    yield "random-spikes", (rng.random((random_steps, 8, n_in)) < 0.1).astype(np.float32), None
    yield "random-currents", rng.normal(0, 1, (random_steps, 8, n_in)).astype(np.float32), None


def task_of(model: onnx.ModelProto, name: str | None = None, data_dir: str | None = None):
    """The task a model was trained on (from its metadata), or the one named."""
    from lsnn.compiler.onnx.export import metadata
    from lsnn.reference.tasks import make_task

    cfg = metadata(model).get("lsnn.config")
    params = dict(cfg["task"]) if isinstance(cfg, dict) and "task" in cfg else {}
    if name is not None and params.get("name") != name:
        params = {"name": name}
    if not params:
        return None
    if data_dir is not None and params.get("name") == "smnist":  # the only task that reads files
        params["data_dir"] = data_dir
    return make_task(**params)


def verify(model_path, runtime: str = "ort", *, task: str | None = None, data_dir: str | None = None,
           limit: int | None = None, batch_size: int = 64, threads: int = 1, rtol: float = RTOL,
           margin: float = MARGIN, progress: bool = True) -> dict:
    """Run ``runtime`` and the reference on the same inputs and compare them (module docstring)."""
    from tqdm import tqdm

    from lsnn.compiler.onnx.validate import load
    from lsnn.reference.tasks import decisions
    from lsnn.targets import Runtime, open_runtime

    model = load(model_path)
    probed, probes = add_probes(model)
    probe_names = [n for p in probes for n in (p.Z, p.V, p.A)]
    ref_rt = open_runtime(probed, "torch", threads)
    # a Runtime object: already compiled from add_probes(model)[0] (e.g. on a machine without a compiler)
    if isinstance(runtime, Runtime):
        rt, runtime = runtime, getattr(runtime, "target", runtime.name)
    else:
        rt = open_runtime(probed, runtime, threads)
    outputs = [o.name for o in model.graph.output]
    names = list(dict.fromkeys(outputs + probe_names))
    readout = "Y" if "Y" in outputs else outputs[0]
    the_task = task_of(model, task, data_dir)
    if limit is None and the_task is not None:
        limit = 256 if the_task.name == "smnist" else 64
    results: dict[str, BatchResult] = {}
    preds: dict[str, list] = {}
    batches = list(datasets(model, the_task, limit, batch_size))
    for name, X, target in tqdm(batches, desc=f"verify {runtime}", disable=not progress, dynamic_ncols=True):
        feeds = _feeds(model, X)
        ref = ref_rt.run(feeds, names)
        got = rt.run(feeds, names)
        res = compare(ref, got, probes, outputs, rtol, margin)
        results.setdefault(name, BatchResult()).merge(res)
        if target is not None and getattr(the_task, "metric", "accuracy") == "mse":  # regression: per trial
            pr, labels = the_task.predictions(ref[readout], target)
            pg, _ = the_task.predictions(got[readout], target)
            preds.setdefault(name, []).append((pr.ravel(), pg.ravel(), labels.ravel()))
        elif target is not None:
            pr, labels = decisions(ref[readout], target)
            pg, _ = decisions(got[readout], target)
            preds.setdefault(name, []).append((pr.numpy(), pg.numpy(), labels.numpy()))
    report = {"model": str(model_path) if not isinstance(model_path, onnx.ModelProto) else "<in memory>",
              "runtime": runtime, "reference": "torch", "rtol": rtol, "margin": margin,
              "task": the_task.name if the_task else None, "alif_nodes": [p.node for p in probes], "datasets": {}}
    passed = True
    for name, r in results.items():
        fd = [t for t in r.first_divergence if t is not None]
        entry = {
            "sequences": r.sequences, "steps": r.steps,
            "sequences_diverged": r.diverged,
            "first_divergence_step": min(fd) if fd else None,
            "median_first_divergence_step": float(np.median(fd)) if fd else None,
            "max_rel_err_V_before_divergence": r.err_V if probes else None,
            "max_rel_err_A_before_divergence": r.err_A if probes else None,
            "max_rel_err_outputs_before_divergence": r.err_out,
            "max_abs_err_readout": r.readout_abs_err,
            "spike_agreement": r.spikes_equal / r.spikes_total if r.spikes_total else None,
            "worst_flip_margin": r.worst_margin if fd else None,
            "failures": r.failures[:20], "passed": not r.failures,
        }
        if name in preds:
            pr = np.concatenate([p[0] for p in preds[name]])
            pg = np.concatenate([p[1] for p in preds[name]])
            lab = np.concatenate([p[2] for p in preds[name]])
            if getattr(the_task, "metric", "accuracy") == "mse":
                # a trial's prediction agrees when it is within 1e-3 (relative to the answers' scale)
                tol = 1e-3 * max(1.0, float(np.abs(lab).max()))
                entry.update({"decisions": int(lab.size), "prediction_agreement": float((np.abs(pr - pg) <= tol).mean()),
                              "max_abs_prediction_difference": float(np.abs(pr - pg).max()),
                              "mse_reference": float(((pr - lab) ** 2).mean()),
                              "mse_runtime": float(((pg - lab) ** 2).mean())})
            else:
                entry.update({"decisions": int(lab.size), "prediction_agreement": float((pr == pg).mean()),
                              "accuracy_reference": float((pr == lab).mean()),
                              "accuracy_runtime": float((pg == lab).mean())})
        passed &= entry["passed"]
        report["datasets"][name] = entry
    report["passed"] = passed
    return report


def format_report(report: dict) -> str:
    def f(x, spec=".2e"):
        return "-" if x is None else format(x, spec)

    lines = [f"parity of {report['runtime']} with the reference ({report['reference']}) on {report['model']}",
             f"  ALIF nodes: {', '.join(report['alif_nodes']) or 'none'}; tolerance: relative {report['rtol']:g} "
             f"before the first spike divergence, flip margin < {report['margin']:g}"]
    head = f"  {'data':16s} {'seqs':>5s} {'steps':>6s} {'diverged':>8s} {'first div':>9s} {'err V':>9s} " \
           f"{'err A':>9s} {'err out':>9s} {'spikes eq':>9s} {'pred agree':>10s} {'acc ref':>7s} {'acc rt':>7s}  result"
    if any("mse_reference" in d for d in report["datasets"].values()):
        head = head.replace("acc ref", "mse ref").replace(" acc rt", " mse rt")
    lines.append(head)
    for name, d in report["datasets"].items():
        lines.append(
            f"  {name:16s} {d['sequences']:5d} {d['steps']:6d} {d['sequences_diverged']:8d} "
            f"{f(d['first_divergence_step'], 'd'):>9s} {f(d['max_rel_err_V_before_divergence']):>9s} "
            f"{f(d['max_rel_err_A_before_divergence']):>9s} {f(d['max_rel_err_outputs_before_divergence']):>9s} "
            f"{f(d['spike_agreement'], '.5f'):>9s} {f(d.get('prediction_agreement'), '.4f'):>10s} "
            f"{f(d.get('accuracy_reference', d.get('mse_reference')), '.4f'):>7s} "
            f"{f(d.get('accuracy_runtime', d.get('mse_runtime')), '.4f'):>7s}  "
            f"{'PASS' if d['passed'] else 'FAIL'}")
        for msg in d["failures"]:
            lines.append(f"    - {msg}")
    lines.append("PASS" if report["passed"] else "FAIL")
    return "\n".join(lines)
