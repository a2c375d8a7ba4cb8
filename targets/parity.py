"""The parity definition every target is verified by: how the outputs of a runtime are
compared with the reference's on one batch.

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
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from lsnn.compiler.onnx.schema import DOMAIN

RTOL = 1e-4
MARGIN = 1e-3


@dataclass
class Probe:
    node: str
    Z: str
    V: str
    A: str


def probe_name(node: str, tag: str) -> str:
    """The name :func:`add_probes` gives an ALIF node's ``V`` or ``A`` output (``tag``) that had none."""
    return f"{node}.probe.{tag}"


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
                    node.output[k] = probe_name(label, tag)
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
    for p in probes:  # per node, so that a failure names the layer
        for what in ("V", "A"):
            err = _norm_err(got[getattr(p, what)], ref[getattr(p, what)], before)
            setattr(res, f"err_{what}", max(getattr(res, f"err_{what}"), err))
            _check_error(res, f"node '{p.node}': {what}", err, rtol)
    _check_flips(ref, got, probes, first, res, margin, T)
    _compare_outputs(ref, got, outputs, first, res, T, B)
    res.diverged = int((first < T).sum())
    res.first_divergence = [int(t) if t < T else None for t in first]
    _check_error(res, "outputs", res.err_out, rtol)
    return res


def _check_error(res: BatchResult, what: str, err: float, rtol: float) -> None:
    if not err <= rtol:
        res.failures.append(f"{what} differ before the first spike divergence: relative error {err:.2e} > {rtol:g}")
