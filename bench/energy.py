"""Synaptic operations and spike-based energy, as NeuroBench defines them.

Per time step and synapse layer with weights ``W [out, in]``:

* a binary (spike) input costs one accumulate (AC) per *active* input per
  fan-out synapse: ``ACs = sum_{i: x_i != 0} fanout(i)``, where ``fanout(i)``
  counts the nonzero weights ``W[:, i]``;
* a real-valued input costs one multiply-accumulate (MAC) per synapse:
  ``MACs = nnz(W)``.

An LSNN has three synapse layers: input (``X -> ALIF``, binary for spike
inputs), recurrent (``z[t-1] -> ALIF``, always spikes) and readout
(``Z -> LI``, spikes). The recurrent baselines (:data:`CELLS`: ONNX's
``LSTM``, ``GRU``, ``RNN``) are counted the same way: an input layer (ACs for
spike inputs), a recurrent layer (``h`` is real: MACs for all ``G*H x H``
weights of the ``G`` gates), the gate arithmetic (the elementwise products
per unit and step, MACs; nonlinearities are not counted) and the linear
readout (MACs). The LSTM's products are ``f*c``, ``i*g`` and ``o*tanh(c)``
(``c = f*c + i*g``, ``h = o*tanh(c)``): 3 per unit. The GRU's are the reset
gate's (``r * (R_h h + Rb_h)`` with ``linear_before_reset``, as PyTorch's
GRU, else ``r * h`` before ``R_h``) and the update's two, ``(1-z)*n`` and
``z*h``: 3 per unit either way. A plain RNN has none. Neuron state updates
are not synaptic operations and are not counted, as in NeuroBench.

From an ONNX graph (:func:`synapse_layers`, :func:`graph_ops`), every node that
holds synapses is a layer, named by the node's name (for a model exported by
:func:`lsnn.compiler.export`, the module path of its layer): an ``ai.lsnn::ALIF``
node has an input and a recurrent synapse layer, an ``ai.lsnn::LI`` node an
input one, an ONNX ``LSTM``, ``GRU`` or ``RNN`` node (any direction) input,
recurrent and gate arithmetic as above,
and a ``MatMul``/``Gemm`` with a constant weight one synapse layer; whether an
input is binary is decided from the values observed on the data. Other ops
(convolutions, normalisation, elementwise) are not counted.

Energy = ACs x E_AC + MACs x E_MAC, by default E_AC = 0.9 pJ and
E_MAC = 4.6 pJ: 32-bit floating-point add and multiply-add at 45 nm
(M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

E_AC_PJ = 0.9
E_MAC_PJ = 4.6
SOURCE = ('M. Horowitz, "Computing\'s energy problem (and what we can do about it)", ISSCC 2014: '
          "45 nm, 32-bit float add 0.9 pJ, multiply 3.7 pJ (MAC = 4.6 pJ)")


@dataclass
class SynOps:
    acs: float = 0.0
    macs: float = 0.0

    def __add__(self, other: "SynOps") -> "SynOps":
        return SynOps(self.acs + other.acs, self.macs + other.macs)

    def energy_pj(self, e_ac: float = E_AC_PJ, e_mac: float = E_MAC_PJ) -> float:
        return self.acs * e_ac + self.macs * e_mac


def is_binary(x: np.ndarray) -> bool:
    return bool(np.isin(x, (0.0, 1.0)).all())


def layer_ops(x: np.ndarray, W: np.ndarray, binary: bool | None = None) -> SynOps:
    """Synaptic operations of one layer over a whole sequence batch; ``x`` is ``[T, B, in]``,
    ``W`` is ``[out, in]``. Totals over all steps and sequences."""
    W = np.asarray(W)
    binary = is_binary(x) if binary is None else binary
    fanout = (W != 0).sum(0)  # [in]
    if binary:
        return SynOps(acs=float(((x != 0).reshape(-1, x.shape[-1]) @ fanout).sum()))
    steps = x.size // x.shape[-1]  # every step of every sequence ([T, B, in]), or every row ([N, in])
    return SynOps(macs=float(steps * int(fanout.sum())))


def lsnn_ops(X: np.ndarray, Z: np.ndarray, W: np.ndarray, R: np.ndarray, W_out: np.ndarray,
             initial_z: np.ndarray | None = None) -> dict[str, SynOps]:
    """Per-layer synaptic operations of an LSNN over ``[T, B]`` (totals)."""
    z0 = np.zeros_like(Z[:1]) if initial_z is None else initial_z[None]
    previous = np.concatenate([z0, Z[:-1]])  # the recurrent input at step t is z[t-1]
    return {"input": layer_ops(X, W), "recurrent": layer_ops(previous, R, binary=True),
            "readout": layer_ops(Z, W_out, binary=True)}


def model_ops(model, X: np.ndarray, Z: np.ndarray | None) -> dict[str, SynOps]:
    """Per-layer operations of a reference model (:mod:`lsnn.reference.modules`) on inputs ``X``;
    ``Z`` is its spikes, ``None`` for a recurrent baseline (counted by its ONNX op's :class:`Cell`)."""
    def w(t):
        return t.detach().cpu().numpy()

    if Z is not None:
        return lsnn_ops(X, Z, w(model.alif.W), w(model.alif.R), w(model.readout.W))
    layer = model.layer
    return CELLS[model.onnx_op].ops(X, w(layer.weight_ih_l0), w(layer.weight_hh_l0), w(model.readout.weight))


# -- counted from an ONNX graph ------------------------------------------------------------------

@dataclass(frozen=True)
class Synapses:
    """One synapse layer of a graph node: presynaptic activity ``source`` (a value name) through
    the weight ``weight`` (a value name; ``transposed``: stored ``[in, out]``). ``delayed``: the
    activity of the previous step reaches it (a recurrent layer; ``initial`` is step -1's, zeros
    when ``""``); ``binary``: the activity is always spikes (None: decided from the values)."""
    layer: str
    kind: str
    source: str
    weight: str
    transposed: bool = False
    delayed: bool = False
    initial: str = ""
    binary: bool | None = None

    def needs(self) -> list[str]:
        return [n for n in (self.source, self.weight, self.initial) if n]

    def count(self, values: dict) -> SynOps:
        W = np.asarray(values[self.weight])
        W = W.reshape(-1, W.shape[-1])  # a recurrent op's [directions, G*H, in]: every direction's rows
        x = values[self.source]
        if self.delayed:
            z0 = values[self.initial][None] if self.initial else np.zeros_like(x[:1])
            x = np.concatenate([z0, x[:-1]])  # the recurrent input at step t is z[t-1]
        return layer_ops(x, W.T if self.transposed else W, self.binary)


@dataclass(frozen=True)
class GateArithmetic:
    """A recurrent op's elementwise products: ``products`` MACs per unit, step and direction."""
    layer: str
    source: str
    units: int  # hidden units times directions
    products: int
    kind: str = "gates"

    def needs(self) -> list[str]:
        return [self.source]

    def count(self, values: dict) -> SynOps:
        x = values[self.source]
        return SynOps(macs=float(x.shape[0] * x.shape[1] * self.products * self.units))


@dataclass(frozen=True)
class Cell:
    """A recurrent op of ONNX (``op``) and its gate arithmetic: ``products`` elementwise products per
    unit and step (see the module's docstring); its gates are the blocks of rows of its weights."""
    op: str
    products: int

    def ops(self, X: np.ndarray, W_ih: np.ndarray, W_hh: np.ndarray, W_out: np.ndarray) -> dict[str, SynOps]:
        """Per-layer operations of one forward layer (``W_ih [G*H, I]``, ``W_hh [G*H, H]``) and its
        linear readout over ``X [T, B, I]``."""
        T, B = X.shape[:2]
        H = W_hh.shape[1]
        h = np.full((T, B, H), 0.5, np.float32)  # h is real-valued: every synapse is a MAC
        out = {"input": layer_ops(X, W_ih), "recurrent": layer_ops(h, W_hh, binary=False)}
        if self.products:
            out["gates"] = SynOps(macs=float(T * B * self.products * H))
        return {**out, "readout": layer_ops(h, W_out, binary=False)}

    def synapses(self, node: onnx.NodeProto, label: str) -> list:
        """The synapse layers of a node of this op (``X`` sequence-first or batch-first alike: a
        count takes the product of its first two sizes)."""
        directions = 2 if _attribute(node, "direction", b"forward") in (b"bidirectional", "bidirectional") else 1
        layers = [Synapses(label, "input", node.input[0], node.input[1]),
                  Synapses(label, "recurrent", node.input[0], node.input[2], binary=False)]
        if self.products:
            layers.append(GateArithmetic(label, node.input[0], directions * int(_attribute(node, "hidden_size")),
                                         self.products))
        return layers


#: the recurrent ops of ONNX by name
CELLS = {c.op: c for c in (Cell("LSTM", products=3), Cell("GRU", products=3), Cell("RNN", products=0))}


def node_label(node: onnx.NodeProto, index: int) -> str:
    """A node's name, or ``OpType_index`` for a node without one."""
    return node.name or f"{node.op_type}_{index}"


def _attribute(node: onnx.NodeProto, name: str, default=0):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _input(node: onnx.NodeProto, k: int) -> str:
    return node.input[k] if len(node.input) > k else ""


def _node_synapses(node: onnx.NodeProto, label: str, constants: dict) -> list:
    """The synapse layers of one node (none for a node that holds no synapses)."""
    if node.domain == "ai.lsnn" and node.op_type == "ALIF":
        return [Synapses(label, "input", node.input[0], node.input[1]),
                Synapses(label, "recurrent", node.output[0], node.input[2], delayed=True,
                         initial=_input(node, 8), binary=True)]
    if node.domain == "ai.lsnn" and node.op_type == "LI":
        return [Synapses(label, "input", node.input[0], node.input[1])]
    if node.domain in ("", "ai.onnx") and node.op_type in CELLS:
        return CELLS[node.op_type].synapses(node, label)
    if node.domain in ("", "ai.onnx") and node.op_type == "MatMul" and node.input[1] in constants \
            and constants[node.input[1]].ndim == 2:
        return [Synapses(label, "input", node.input[0], node.input[1], transposed=True)]
    if node.domain in ("", "ai.onnx") and node.op_type == "Gemm" and node.input[1] in constants \
            and not _attribute(node, "transA"):
        return [Synapses(label, "input", node.input[0], node.input[1], transposed=not _attribute(node, "transB"))]
    return []


def constants(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The graph's initializers and ``Constant`` node values, by name."""
    out = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    for node in proto.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            a = next((a for a in node.attribute if a.name == "value"), None)
            if a is not None:
                out[node.output[0]] = numpy_helper.to_array(a.t)
    return out


def synapse_layers(proto: onnx.ModelProto) -> list:
    """Every synapse layer of the graph, in graph order: ``ai.lsnn`` ALIF (input, recurrent) and
    LI (input), ONNX ``LSTM``/``GRU``/``RNN`` (input, recurrent, gates), ``MatMul``/``Gemm`` with a
    constant weight."""
    consts = constants(proto)
    return [s for i, node in enumerate(proto.graph.node) for s in _node_synapses(node, node_label(node, i), consts)]


def graph_ops(layers: list, values: dict) -> dict[str, dict[str, SynOps]]:
    """Synaptic operations (totals over the batch) per node and synapse layer, ``{layer: {kind: SynOps}}``;
    ``values`` holds every name :meth:`needs` asks for (the graph's constants and the values observed)."""
    out: dict[str, dict[str, SynOps]] = {}
    for s in layers:
        out.setdefault(s.layer, {})[s.kind] = s.count(values)
    return out
