"""Random ``ai.lsnn`` graphs and feeds for the property-based test (tests/test_properties.py).

Everything here is written from ``shared/spec/ops.md`` alone: bare ``ai.lsnn``
nodes built with ``onnx.helper`` (no function bodies), never with the suite's
exporter. A :class:`GraphSpec` says how to build one model (shapes, attributes,
optional inputs and outputs, a seed for the values, and at most one defect); a
:class:`FeedSpec` says how to build one set of inputs for it. Both are frozen
dataclasses whose ``repr`` rebuilds them, so a failing case is reported as two
Python expressions that reproduce it
(``python tests/lsnn_graphs.py "GraphSpec(...)" "FeedSpec(...)"`` replays one).

The judge (:func:`judge`) follows the rule the issue asks for: each runtime
either agrees with the reference (``lsnn.targets.open_runtime(model, "torch")``)
or raises an :class:`~lsnn.reference.errors.LsnnError` where that is what the
case allows; anything else (another exception, a hang, a silent difference)
is a problem, kept with its reproducer in a :class:`Tally`.
"""
from __future__ import annotations

import json
import math
import re
import threading
import traceback
from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from lsnn import compiler
from lsnn.reference.errors import LsnnError
from lsnn.targets import open_runtime
from lsnn.targets.torch_runtime import TorchRuntime
from lsnn.targets.parity import add_probes

DOMAIN = "ai.lsnn"  # written out from the spec on purpose: the test does not trust the code's constant
RTOL = 1e-4         # fp32 parity, relative to the reference's largest finite magnitude (as in `lsnn verify`)
MARGIN = 1e-3       # a spike may differ only where the reference's |v - A| / |A| is below this (a rounding flip)

ALIF_STATES = ("initial_v", "initial_a", "initial_z", "initial_r")
ALIF_EXTRA_OUTPUTS = ("V", "A", "final_v", "final_a", "final_z", "final_r")
ALIF_PARAMS = ("W", "R", "beta", "alpha", "rho")
LI_PARAMS = ("Wo", "alpha_o", "bias_o")
nan, inf = float("nan"), float("inf")  # so that the repr of a spec with non-finite values evaluates here
NONFINITE = (nan, inf, -inf)

# -- what a case expects of a runtime ------------------------------------------------------
AGREE = "agree"            # must return outputs equal to the reference's
ERROR = "error"            # must raise an LsnnError
CONSISTENT = "consistent"  # left to the runtime by the spec: raise an LsnnError where the reference does, else agree


# -- the model -------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphSpec:
    """One model: ``pre`` (standard ops) then ``layers`` (``ALIF``, ``LI`` or ``ALIF+LI``)."""
    layers: str = "ALIF+LI"
    pre: str = ""                  # "", "MatMul", "Relu" or "MatMul+Relu" before the first ai.lsnn node
    I: int = 3                     # noqa: E741 - the spec's names
    H: int = 4
    O: int = 2
    I0: int = 3                    # width of X when a MatMul comes first
    T: int | None = None           # fixed time dimension, or None: symbolic "T"
    B: int | None = None           # fixed batch dimension, or None: symbolic "B"
    thr: float | None = 0.05       # None: attribute absent (default 0.01)
    n_refractory: int | None = 2   # None: attribute absent (default 0)
    alif_states: tuple = ("none",) * 4   # per initial state: "none", "init" (initializer) or "input" (fed)
    alif_outputs: tuple = (False,) * 6   # which of V, A, final_v, final_a, final_z, final_r the node computes
    expose_z: bool = True          # ALIF+LI: Z is also a graph output
    li_bias: str = "none"          # "none" or "init"
    li_state: str = "none"         # "none", "init" or "input"
    li_final: bool = False
    omitted: str = "empty"         # how an absent optional input is written: "empty" (the name "") or "trailing"
    decay: str = "typical"         # "typical" (alpha, rho in (0.5, 1)) or "edges" (0, 1 and values between)
    sparse: bool = False           # half the input weights exactly 0 (the event-driven kernels skip them)
    state_B: int = 2               # batch of initial states given as initializers
    seed: int = 0
    defect: tuple = ()             # () or a defect (see DEFECTS): what makes the model invalid

    @property
    def bound_B(self) -> int | None:
        """The batch every feed must use (fixed, or set by initial states given as initializers), or None."""
        if self.B is not None:
            return self.B
        alif_init = self.has_alif and "init" in self.alif_states
        li_init = self.has_li and self.li_state == "init"
        return self.state_B if alif_init or li_init else None

    @property
    def has_alif(self) -> bool:
        return "ALIF" in self.layers.split("+")

    @property
    def has_li(self) -> bool:
        return "LI" in self.layers.split("+")

    @property
    def nonfinite_weights(self) -> bool:
        return bool(self.defect) and self.defect[0] == "nonfinite"

    @property
    def valid(self) -> bool:
        return not self.defect

    def policy(self, runtime: "Subject", feed: "FeedSpec") -> str:
        """What this model and feed expect of ``runtime``."""
        if self.defect and not self.nonfinite_weights:
            return ERROR
        if self.nonfinite_weights and runtime.compiled:
            return ERROR  # issue 12: non-finite weights are rejected at compile time on every target
        p = feed.policy()
        return CONSISTENT if self.nonfinite_weights and p == AGREE else p

    def fed_states(self) -> list[str]:
        """The initial states given as graph inputs (each named as the op's input)."""
        out = [n for n, s in zip(ALIF_STATES, self.alif_states) if s == "input"] if self.has_alif else []
        return out + (["initial_y"] if self.has_li and self.li_state == "input" else [])

    def x_width(self) -> int:
        return self.I0 if "MatMul" in self.pre else self.I


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _decay(rng: np.random.Generator, n: int, style: str, low: float) -> np.ndarray:
    if style == "edges":
        return _f32(rng.choice([0.0, 1.0, 0.5, rng.uniform(low, 1.0)], size=n))
    return _f32(rng.uniform(low, 0.99, size=n))


def state_value(name: str, B: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """A plausible initial state: v, y small reals; a in [0, 0.5]; z spikes; r whole steps left."""
    if name == "initial_z":
        return _f32(rng.random((B, n)) < 0.3)
    if name == "initial_r":
        return _f32(rng.integers(0, 4, (B, n)))
    if name == "initial_a":
        return _f32(rng.uniform(0, 0.5, (B, n)))
    return _f32(rng.normal(0, 0.1 if name == "initial_v" else 0.5, (B, n)))


def parameters(spec: GraphSpec) -> dict[str, np.ndarray]:
    """The weights of ``spec``, from its seed."""
    rng = np.random.default_rng(spec.seed)
    p = {}
    if "MatMul" in spec.pre:
        p["P"] = _f32(rng.normal(0, 1, (spec.I0, spec.I)))
    if spec.has_alif:
        W = rng.normal(0, 1.0, (spec.H, spec.I))
        if spec.sparse:
            W[rng.random(W.shape) < 0.5] = 0.0
        p.update(W=_f32(W), R=_f32(rng.normal(0, 0.5, (spec.H, spec.H))),
                 beta=_f32(np.where(rng.random(spec.H) < 0.5, 0.0, rng.uniform(0, 2, spec.H))),
                 alpha=_decay(rng, spec.H, spec.decay, 0.5), rho=_decay(rng, spec.H, spec.decay, 0.8))
    if spec.has_li:
        n_in = spec.H if spec.has_alif else spec.I
        p.update(Wo=_f32(rng.normal(0, 1, (spec.O, n_in))), alpha_o=_decay(rng, spec.O, spec.decay, 0.5))
        if spec.li_bias == "init":
            p["bias_o"] = _f32(rng.normal(0, 0.2, spec.O))
    b = spec.bound_B or spec.state_B
    if spec.has_alif:
        p.update({n: state_value(n, b, spec.H, rng) for n, s in zip(ALIF_STATES, spec.alif_states) if s == "init"})
    if spec.has_li and spec.li_state == "init":
        p["initial_y"] = state_value("initial_y", b, spec.O, rng)
    return p


def _optional(names: list[str], omitted: str) -> list[str]:
    """Inputs with "" for the absent optional ones, the trailing ones dropped when ``omitted`` says so."""
    if omitted == "trailing":
        while names and not names[-1]:
            names.pop()
    return names


def _vi(name: str, dims, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, list(dims))


def build(spec: GraphSpec) -> onnx.ModelProto:
    """The ONNX model of ``spec``, defect included."""
    T = spec.T if spec.T is not None else "T"
    B = spec.B if spec.B is not None else "B"
    p = parameters(spec)
    nodes, outputs = [], []
    inputs = [_vi("X", (T, B, spec.x_width()))]
    x = "X"
    if "MatMul" in spec.pre:
        nodes.append(helper.make_node("MatMul", [x, "P"], ["pre_mm"], name="pre_matmul"))
        x = "pre_mm"
    if "Relu" in spec.pre:
        nodes.append(helper.make_node("Relu", [x], ["pre_relu"], name="pre_relu"))
        x = "pre_relu"
    for name in spec.fed_states():
        inputs.append(_vi(name, (B, spec.O if name == "initial_y" else spec.H)))
    if spec.has_alif:
        ins = [x, *ALIF_PARAMS] + [n if s != "none" else "" for n, s in zip(ALIF_STATES, spec.alif_states)]
        outs = ["Z"] + [n if on else "" for n, on in zip(ALIF_EXTRA_OUTPUTS, spec.alif_outputs)]
        while not outs[-1]:
            outs.pop()
        attrs = {k: v for k, v in (("thr", spec.thr), ("n_refractory", spec.n_refractory)) if v is not None}
        nodes.append(helper.make_node("ALIF", _optional(ins, spec.omitted), outs, name="alif", domain=DOMAIN, **attrs))
        for o in outs:
            if o and (o != "Z" or spec.expose_z or not spec.has_li):
                outputs.append(_vi(o, (T, B, spec.H) if o in ("Z", "V", "A") else (B, spec.H)))
        x = "Z"
    if spec.has_li:
        ins = [x, "Wo", "alpha_o", "bias_o" if spec.li_bias == "init" else "",
               "initial_y" if spec.li_state != "none" else ""]
        outs = ["Y"] + (["final_y"] if spec.li_final else [])
        nodes.append(helper.make_node("LI", _optional(ins, spec.omitted), outs, name="readout", domain=DOMAIN))
        outputs += [_vi("Y", (T, B, spec.O))] + ([_vi("final_y", (B, spec.O))] if spec.li_final else [])
    graph = helper.make_graph(nodes, "random_lsnn", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in p.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)])
    if spec.defect:
        DEFECTS[spec.defect[0]](model, spec, *spec.defect[1:])
    return model


# -- defects: each makes a valid model invalid in one way ------------------------------------
def _node(model, spec, which: str) -> onnx.NodeProto:
    name = {"ALIF": "alif", "LI": "readout"}[which]
    return next(n for n in model.graph.node if n.name == name)


def _init(model, name: str) -> onnx.TensorProto:
    return next(t for t in model.graph.initializer if t.name == name)


def _set_init(model, name: str, value: np.ndarray) -> None:
    _init(model, name).CopyFrom(numpy_helper.from_array(value, name))


def _domain(model, spec, which, domain):
    _node(model, spec, which).domain = domain
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))


def _opset(model, spec, version):
    next(o for o in model.opset_import if o.domain == DOMAIN).version = version


def _op_type(model, spec, which, op_type):
    _node(model, spec, which).op_type = op_type


def _dtype(model, spec, name, dtype):
    _set_init(model, name, numpy_helper.to_array(_init(model, name)).astype(dtype))


def _shape(model, spec, name, how):
    a = numpy_helper.to_array(_init(model, name))
    a = {"grow_last": lambda: np.concatenate([a, a[..., :1]], axis=-1),
         "grow_first": lambda: np.concatenate([a, a[:1]], axis=0),
         "rank_up": lambda: a[None],
         "rank_down": lambda: a.reshape(-1) if a.ndim > 1 else a.reshape(-1)[0]}[how]()
    _set_init(model, name, np.array(a, order="C"))  # (ascontiguousarray would make a scalar 1-D)


def _x_dtype(model, spec, elem):
    model.graph.input[0].type.tensor_type.elem_type = elem


def _attribute(model, spec, name, value):
    node = _node(model, spec, "ALIF")
    keep = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(keep + [helper.make_attribute(name, value)])


def _missing(model, spec, which, index, how):
    node = _node(model, spec, which)
    names = list(node.input)
    names = names[:index] if how == "truncate" else names[:index] + [""] + names[index + 1:]
    del node.input[:]
    node.input.extend(names)


def _nonfinite(model, spec, name, value, count):
    a = numpy_helper.to_array(_init(model, name)).copy()
    flat = a.reshape(-1)
    flat[np.random.default_rng(spec.seed + 1).choice(flat.size, min(count, flat.size), replace=False)] = value
    _set_init(model, name, a)


DEFECTS = {"domain": _domain, "opset": _opset, "op_type": _op_type, "dtype": _dtype, "shape": _shape,
           "x_dtype": _x_dtype, "attribute": _attribute, "missing": _missing, "nonfinite": _nonfinite}


# -- the feeds -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FeedSpec:
    """One set of inputs: ``T`` steps of ``B`` sequences, spikes or currents from ``seed``; ``specials``
    are non-finite values put at ``(input name, position fraction, value)``; ``defect`` a wrong feed."""
    T: int = 5
    B: int = 2
    kind: str = "spikes"     # "spikes" (0/1 at rate 0.3) or "currents" (normal, sd 1)
    seed: int = 0
    specials: tuple = ()
    defect: tuple = ()       # ("dtype",), ("width",), ("rank",), ("batch",), ("time",), ("missing", name), ("unknown",)

    def policy(self) -> str:
        if self.defect:
            return ERROR
        return CONSISTENT if self.T == 0 or self.B == 0 else AGREE


def feeds(spec: GraphSpec, feed: FeedSpec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(feed.seed)
    T, B, width = feed.T, feed.B, spec.x_width()
    if feed.defect[:1] == ("batch",):
        B += 1
    if feed.defect[:1] == ("time",):
        T += 1
    if feed.defect[:1] == ("width",):
        width += 1
    X = _f32(rng.random((T, B, width)) < 0.3) if feed.kind == "spikes" else _f32(rng.normal(0, 1, (T, B, width)))
    out = {"X": X}
    for name in spec.fed_states():  # of the feed's own batch: a "batch" defect changes X only
        out[name] = state_value(name, feed.B, spec.O if name == "initial_y" else spec.H, rng)
    for name, where, value in feed.specials:
        if name in out and out[name].size:
            flat = out[name].reshape(-1)
            flat[min(int(where * flat.size), flat.size - 1)] = value
    if feed.defect[:1] == ("dtype",):
        out["X"] = out["X"].astype(np.float64)
    if feed.defect[:1] == ("rank",):
        out["X"] = out["X"].reshape(T * B, width)
    if feed.defect[:1] == ("missing",):
        out.pop(feed.defect[1], None)
    if feed.defect[:1] == ("unknown",):
        out["not_an_input"] = _f32(np.zeros((T, B, width)))
    return out


# -- strategies ------------------------------------------------------------------------------
SEEDS = st.integers(0, 2**31 - 1)
FLOAT32 = st.floats(0.0005, 1.0).map(lambda x: float(np.float32(x)))  # as an ONNX float attribute holds it


@st.composite
def graph_specs(draw, small: bool = False) -> GraphSpec:
    """A valid model."""
    dim = st.integers(1, 3 if small else 6)
    layers = draw(st.sampled_from(["ALIF", "LI", "ALIF+LI", "ALIF+LI"]))
    spec = GraphSpec(
        layers=layers,
        pre=draw(st.sampled_from(["", "", "MatMul", "Relu", "MatMul+Relu"])),
        I=draw(dim), H=draw(dim), O=draw(dim), I0=draw(dim),
        T=draw(st.integers(1, 6)) if draw(st.integers(0, 3)) == 0 else None,
        B=draw(st.integers(1, 3)) if draw(st.integers(0, 3)) == 0 else None,
        thr=draw(st.none() | st.sampled_from([0.0, 0.01, 0.05, 0.2, 1.0, -0.1]) | FLOAT32.map(lambda x: 2 * x)),
        n_refractory=draw(st.none() | st.integers(0, 3) | st.integers(4, 40)),
        alif_states=tuple(draw(st.sampled_from(["none", "none", "init", "input"])) for _ in ALIF_STATES),
        alif_outputs=tuple(draw(st.booleans()) for _ in ALIF_EXTRA_OUTPUTS),
        expose_z=draw(st.booleans()),
        li_bias=draw(st.sampled_from(["none", "init"])),
        li_state=draw(st.sampled_from(["none", "init", "input"])),
        li_final=draw(st.booleans()),
        omitted=draw(st.sampled_from(["empty", "trailing"])),
        decay=draw(st.sampled_from(["typical", "typical", "edges"])),
        sparse=draw(st.booleans()),
        state_B=draw(st.integers(1, 3)),
        seed=draw(SEEDS),
    )
    return spec


def nonfinite_weights(spec: GraphSpec):
    """NaN or an infinity in one to three entries of a weight of an ai.lsnn node."""
    weights = [n for n in parameters(spec) if n != "P" and not n.startswith("initial")]
    return st.tuples(st.just("nonfinite"), st.sampled_from(weights), st.sampled_from(NONFINITE), st.integers(1, 3))


@st.composite
def defects(draw, spec: GraphSpec) -> tuple:
    """One defect that ``spec`` can carry; all but "nonfinite" make the model invalid by the spec."""
    which = [w for w, on in (("ALIF", spec.has_alif), ("LI", spec.has_li)) if on]
    lsnn_params = [n for n in parameters(spec) if n != "P"]
    options = [
        st.tuples(st.just("domain"), st.sampled_from(which), st.sampled_from(["ai.lsnnx", "", "ai.LSNN"])),
        st.tuples(st.just("opset"), st.sampled_from([0, 2, 7])),
        st.tuples(st.just("op_type"), st.sampled_from(which), st.sampled_from(["GRU", "Alif", "ALIF2"])),
        st.tuples(st.just("dtype"), st.sampled_from(lsnn_params), st.sampled_from(["float64", "int32", "float16"])),
        st.tuples(st.just("shape"), st.sampled_from(lsnn_params),
                  st.sampled_from(["grow_last", "grow_first", "rank_up", "rank_down"])),
        st.tuples(st.just("x_dtype"), st.sampled_from([TensorProto.DOUBLE, TensorProto.INT32])),
        st.tuples(st.just("missing"), st.sampled_from(which),
                  st.integers(1, 5), st.sampled_from(["empty", "truncate"])),
        nonfinite_weights(spec),
    ]
    if spec.has_alif:
        options += [st.tuples(st.just("attribute"), st.just("n_refractory"), st.integers(-5, -1)),
                    st.tuples(st.just("attribute"), st.just("thr"), st.sampled_from(NONFINITE))]
    d = draw(st.one_of(options))
    if d[0] == "missing":  # a required input: ALIF has 6, LI 3 (X itself stays: removing it leaves no input)
        d = (d[0], d[1], min(d[2], 5 if d[1] == "ALIF" else 2), d[3])
    return d


@st.composite
def invalid_specs(draw, small: bool = False) -> GraphSpec:
    spec = draw(graph_specs(small))
    return replace(spec, defect=draw(defects(spec)))


@st.composite
def feed_specs(draw, spec: GraphSpec, defective: bool = True) -> FeedSpec:
    bound_T, bound_B = spec.T, spec.bound_B
    T = bound_T if bound_T is not None else (0 if draw(st.integers(0, 11)) == 0 else draw(st.integers(1, 12)))
    B = bound_B if bound_B is not None else (0 if draw(st.integers(0, 11)) == 0 else draw(st.integers(1, 3)))
    names = ["X"] + [n for n in spec.fed_states() if n in ("initial_v", "initial_a", "initial_y")]
    specials = ()
    if draw(st.integers(0, 2)) == 0:
        specials = tuple(draw(st.lists(st.tuples(st.sampled_from(names), st.floats(0, 1), st.sampled_from(NONFINITE)),
                                       min_size=1, max_size=3)))
    defect = ()
    if defective and draw(st.integers(0, 5)) == 0:
        kinds = [("dtype",), ("width",), ("rank",), ("unknown",)]
        kinds += [("time",)] if bound_T is not None else []
        kinds += [("batch",)] if bound_B is not None or spec.fed_states() else []
        kinds += [("missing", n) for n in spec.fed_states()]
        defect = draw(st.sampled_from(kinds))
    return FeedSpec(T=T, B=B, kind=draw(st.sampled_from(["spikes", "currents"])), seed=draw(SEEDS),
                    specials=specials, defect=defect)


# -- runtimes --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Subject:
    """A runtime under test: ``open(model)`` returns something with ``run(feeds) -> dict``."""
    name: str
    open: object
    compiled: bool = False   # a compile target (rejects non-finite weights at compile time)
    reference: bool = False  # the oracle the others are compared with


@dataclass
class Outcome:
    kind: str                  # "ok", "error" (an LsnnError), "crash" (any other exception) or "hang"
    value: object = None       # the result, or the exception
    where: str = ""            # traceback of a crash

    def text(self) -> str:
        if self.kind == "ok":
            return "returned outputs"
        if self.kind == "hang":
            return f"did not finish within {self.value} s"
        return f"raised {type(self.value).__name__}: {_first_line(self.value)}"


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else "")[:300]


def call(fn, timeout: float) -> Outcome:
    """``fn()`` on a watchdog thread: its result, its error, or "hang" after ``timeout`` seconds
    (the thread is then abandoned; a hang is a failure, so the test stops caring about it)."""
    box: list[Outcome] = []

    def target():
        try:
            box.append(Outcome("ok", fn()))
        except LsnnError as e:
            box.append(Outcome("error", e))
        except Exception as e:  # noqa: BLE001 - anything else is exactly what the test looks for
            box.append(Outcome("crash", e, "".join(traceback.format_exception(e))[-3000:]))

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    return box[0] if box else Outcome("hang", timeout)


# -- comparison ------------------------------------------------------------------------------
def _scale(ref: np.ndarray) -> float:
    finite = np.abs(ref[np.isfinite(ref)])
    return float(finite.max()) if finite.size else 0.0


def _differ(got: np.ndarray, ref: np.ndarray, scale: float = 0.0) -> np.ndarray:
    """Where ``got`` and ``ref`` disagree: NaN against anything but NaN, an infinity against anything
    but the same infinity, finite values further apart than RTOL of the reference's scale (or of
    ``scale``, when larger)."""
    nan_g, nan_r = np.isnan(got), np.isnan(ref)
    fin = np.isfinite(got) & np.isfinite(ref)
    tol = RTOL * max(_scale(ref), scale)
    with np.errstate(invalid="ignore", over="ignore"):
        close = np.where(fin, np.abs(got - ref) <= tol, got == ref)
    return (nan_g != nan_r) | (~nan_g & ~nan_r & ~close)


def _per_step(mask: np.ndarray, T: int, B: int) -> np.ndarray:
    return mask.reshape(T, B, -1).any(-1) if mask.size else np.zeros((T, B), bool)


def compare(ref: dict, got: dict, spec: GraphSpec, probes) -> str | None:
    """None when ``got`` agrees with ``ref`` by the parity rule of ``lsnn verify``, else why not.

    Per sequence, time-major outputs must agree step by step up to the first step where a spike
    differs; there each differing neuron must be a rounding flip (reference margin |v - A| / |A|
    finite and below MARGIN); after it nothing is compared, and final states only where nothing
    diverged. When Z is not an output, a difference in the readout counts as a possible flip only
    if the reference had a neuron that close to threshold at or before that step. ``probes()``
    returns the reference's V and A (computed only when a margin is needed)."""
    if set(got) != set(ref):
        return f"outputs {sorted(got)}, the reference gives {sorted(ref)}"
    for name in ref:
        if got[name].shape != ref[name].shape or got[name].dtype != ref[name].dtype:
            return f"output '{name}' is {got[name].dtype}{list(got[name].shape)}, " \
                   f"the reference's {ref[name].dtype}{list(ref[name].shape)}"
    timed = [n for n in ref if n in ("Z", "V", "A", "Y")]
    T, B = ref[timed[0]].shape[:2] if timed else (0, 0)
    if T == 0 or B == 0:
        return _compare_final(ref, got, None, lambda name: 0.0)
    diff = {n: _per_step(_differ(got[n], ref[n]), T, B) for n in timed}
    first = np.full(B, T)
    if "Z" in ref:
        z = diff["Z"]
        first = np.where(z.any(0), z.argmax(0), T)
    for b in range(B):
        t_end = first[b]
        for n in timed:
            bad = np.nonzero(diff[n][:t_end, b])[0]
            if not bad.size:
                continue
            t = int(bad[0])
            if "Z" in ref or not spec.has_alif or not _near_threshold(probes(), t, b, None):
                return _where(n, got, ref, t, b, "before any spike differs" if spec.has_alif else "")
            first[b] = min(first[b], t)  # Z hidden: a possible rounding flip; stop comparing this sequence
            break
        if first[b] < T and "Z" in ref:
            t = int(first[b])
            neurons = np.nonzero(got["Z"][t, b] != ref["Z"][t, b])[0]
            if not _near_threshold(probes(), t, b, neurons):
                return _where("Z", got, ref, t, b, "and the reference is not near threshold there "
                              f"(margins {_margins(probes(), t, b, neurons)})")
    return _compare_final(ref, got, first == T, lambda name: _run_scale(name, ref, probes))


def _margins(probes: dict, t: int, b: int, neurons) -> list[float]:
    v, A = probes["V"][t, b], probes["A"][t, b]
    idx = slice(None) if neurons is None else neurons
    with np.errstate(divide="ignore", invalid="ignore"):
        return [float(m) for m in np.abs(v[idx] - A[idx]) / np.abs(A[idx])]


def _near_threshold(probes: dict, t: int, b: int, neurons) -> bool:
    """Every given neuron (or, with None, some neuron at some step <= t) is a rounding flip away."""
    if neurons is None:
        return any(any(math.isfinite(m) and m < MARGIN for m in _margins(probes, s, b, None)) for s in range(t + 1))
    return all(math.isfinite(m) and m < MARGIN for m in _margins(probes, t, b, neurons))


def _where(name, got, ref, t, b, why) -> str:
    return (f"output '{name}' differs at step {t}, sequence {b} {why}: got {np.array2string(got[name][t, b], 120)}, "
            f"reference {np.array2string(ref[name][t, b], 120)}").replace("  ", " ")


SERIES_OF = {"final_v": "V", "final_a": "A", "final_y": "Y"}  # a final state and its value over the run


def _run_scale(name: str, ref: dict, probes) -> float:
    """The scale of a final state: the largest magnitude of that quantity over the run (a state
    that ends near 0 is still computed from terms of that size)."""
    series = SERIES_OF.get(name)
    if series is None:
        return 0.0
    return _scale(ref[series] if series in ref else probes()[series])


def _compare_final(ref: dict, got: dict, keep, run_scale) -> str | None:
    """Final states, of the sequences in ``keep`` (None: all)."""
    for name in ref:
        if name in ("Z", "V", "A", "Y"):
            continue
        r, g = ref[name], got[name]
        rows = np.ones(r.shape[0], bool) if keep is None else keep
        bad = _differ(g[rows], r[rows], run_scale(name))
        if bad.any():
            return f"output '{name}' differs: got {np.array2string(g, 120)}, reference {np.array2string(r, 120)}"
    return None


# -- judging and counting ---------------------------------------------------------------------
@dataclass
class Tally:
    """Counts of what ran, and every problem with its reproducer."""
    name: str
    counts: Counter = field(default_factory=Counter)
    problems: list = field(default_factory=list)

    def problem(self, kind: str, spec: GraphSpec, feed: FeedSpec | None, runtime: str, what: str, trace: str = ""):
        self.counts[kind] += 1
        key = (kind, runtime, spec.defect[:1], _signature(what))
        if any(p["key"] == key for p in self.problems):
            self.counts[f"{kind} (repeats)"] += 1
            return
        self.problems.append({"key": key, "kind": kind, "runtime": runtime, "what": what, "graph": repr(spec),
                              "feed": repr(feed) if feed else None, "trace": trace})

    def summary(self) -> dict:
        return {"test": self.name, "counts": dict(sorted(self.counts.items())),
                "problems": [{k: v for k, v in p.items() if k != "key"} for p in self.problems]}

    def report(self, path=None) -> str:
        """The counts and problems as text; written as JSON to ``path`` too, when given."""
        if path is not None:
            path.write_text(json.dumps(self.summary(), indent=1) + "\n")
        c = self.counts
        line = (f"{self.name}: {c['models']} models ({c['valid models']} valid, {c['invalid models']} invalid, "
                f"{c['non-finite weight models']} with non-finite weights), {c['input sets']} input sets, "
                f"{c['checks']} runtime checks: {c['agreements']} agreements, {c['expected errors']} expected errors, "
                f"{c['disagreements']} disagreements, {c['crashes']} crashes, {c['hangs']} hangs"
                + (f" -> {path}" if path else ""))
        lines = [line] + [f"  [{p['kind']}] {p['runtime']}: {p['what']}\n    graph = {p['graph']}\n"
                          f"    feed = {p['feed']}" for p in self.problems]
        return "\n".join(lines)


def _signature(what: str) -> str:
    """A message with its numbers dropped: one entry per kind of problem."""
    return re.sub(r"[-+0-9.e\[\] ,']+", "#", what)[:160]


def judge(tally: Tally, spec: GraphSpec, feed: FeedSpec | None, runtime: Subject, policy: str, got: Outcome,
          ref: Outcome, probes) -> None:
    """Count one runtime's outcome on one case against what the case allows."""
    tally.counts["checks"] += 1
    if got.kind in ("crash", "hang"):
        return tally.problem({"crash": "crashes", "hang": "hangs"}[got.kind], spec, feed, runtime.name,
                             got.text(), got.where)
    if policy == ERROR or policy == CONSISTENT and ref.kind == "error":
        if got.kind == "error":
            tally.counts["expected errors"] += 1
            return
        want = "an LsnnError" + (f" as the reference ({ref.text()})" if policy == CONSISTENT else "")
        return tally.problem("disagreements", spec, feed, runtime.name, f"{got.text()}, expected {want}")
    if runtime.reference:
        if got.kind == "error":
            return tally.problem("disagreements", spec, feed, runtime.name, f"{got.text()}, but the spec allows "
                                 "this case")
        tally.counts["reference results"] += 1
        return
    if ref.kind != "ok":  # the reference failed where it must compute: its own problem, counted there
        tally.counts["not compared (reference failed)"] += 1
        return
    if got.kind == "error":
        return tally.problem("disagreements", spec, feed, runtime.name, f"{got.text()}, but the reference "
                             "computes this case")
    why = compare(ref.value, got.value, spec, probes)
    if why:
        return tally.problem("disagreements", spec, feed, runtime.name, why)
    tally.counts["agreements"] += 1


# -- running a case ----------------------------------------------------------------------------
OPEN_TIMEOUT, RUN_TIMEOUT = 300, 120  # seconds: far above what these sizes take; past them it is a hang

REFERENCE = Subject("torch (reference)", lambda m: open_runtime(m, "torch"), reference=True)
ORT = Subject("ort", lambda m: open_runtime(m, "ort"))
CORTEX_M4 = Subject("cortex-m4", lambda m: compiler.compile(m, "cortex-m4"), compiled=True)


def cpu(events: bool) -> Subject:
    return Subject(f"cpu (events={events})", lambda m: compiler.compile(m, "cpu", events=events), compiled=True)


def run_case(tally: Tally, spec: GraphSpec, feed_list: list[FeedSpec], subjects: list[Subject]) -> None:
    """Open ``spec``'s model on the reference and every subject, run each feed, judge each outcome."""
    model = build(spec)
    tally.counts["models"] += 1
    tally.counts["valid models" if spec.valid else "non-finite weight models" if spec.nonfinite_weights
                 else "invalid models"] += 1
    everyone = [REFERENCE, *subjects]
    opened = {s.name: call(lambda s=s: s.open(model), OPEN_TIMEOUT) for s in everyone}
    for feed in feed_list:
        tally.counts["input sets"] += 1
        inputs = feeds(spec, feed)
        outcomes = {}
        for s in everyone:
            o = opened[s.name]
            outcomes[s.name] = o if o.kind != "ok" else \
                call(lambda o=o: o.value.run({k: v.copy() for k, v in inputs.items()}), RUN_TIMEOUT)
        ref = outcomes[REFERENCE.name]
        probes = _probes(model, inputs)
        for s in everyone:
            judge(tally, spec, feed, s, spec.policy(s, feed), outcomes[s.name], ref, probes)


def _probes(model, inputs):
    """The reference's V and A of the ALIF node, computed on first use (for the rounding-flip rule)."""
    cache = {}

    def get():
        if not cache:
            probed, (probe,) = add_probes(model)
            out = TorchRuntime(probed).run(inputs)
            cache.update(V=out[probe.V], A=out[probe.A])
        return cache
    return get


def main(argv: list[str]) -> int:
    """Replay one reported case: ``python tests/lsnn_graphs.py "GraphSpec(...)" "FeedSpec(...)" [cortex-m4]``."""
    spec, feed = (eval(a, globals()) for a in argv[:2])  # noqa: S307 - the reprs this module prints
    subjects = [CORTEX_M4] if "cortex-m4" in argv[2:] else [ORT, cpu(True), cpu(False)]
    tally = Tally("replay")
    run_case(tally, spec, [feed], subjects)
    print(tally.report())
    for p in tally.problems:
        if p["trace"]:
            print(p["trace"])
    return 1 if tally.problems else 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
