"""ONNX to Relax: TVM's own ONNX importer, extended by subclassing.

Standard ops go through TVM's converters. ``ai.lsnn::ALIF``, ``ai.lsnn::LI``
and ONNX ``LSTM`` go to ours, whether or not the model carries function
bodies (the importer never reads them): each becomes one ``call_tir`` of the
target's kernel, with the time loop inside. A node of any other domain is
rejected: TVM's converters look at the op name alone, so ``ai.lsnnx::ALIF``
or ``com.example::Relu`` would otherwise be taken for something they are not.
Inputs and state slots are read by name from :mod:`lsnn.compiler.onnx.schema`.

Each sequence node's kernel is told which of its outputs the graph reads
(``outputs``: a name given to another node, to a subgraph or as a graph
output); an output named ``""`` or read by nothing is dead, and the kernel
need not compute it (``V`` and ``A`` of an ALIF are read only by probes).
"""
from __future__ import annotations

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

from lsnn.compiler.onnx.schema import ALIF, DOMAIN, LI, LSTM, ONNX_DOMAINS, OPS, sequence_op
from lsnn.reference.errors import LsnnError

_CONST = tvm.ir.expr.Constant
F32 = "float32"

#: What TVM raises: tvm_ffi maps C++ error kinds to these builtins (tvm_ffi/error.py), the
#: classes of tvm.error derive from RuntimeError, and the Python frontend raises the others.
TVM_ERRORS = (RuntimeError, ValueError, TypeError, AttributeError, KeyError, IndexError, AssertionError)


class CompileError(LsnnError):
    """A model the compiler cannot take, with the node and the reason."""


#: The attribute the importer puts on each sequence node it converts: a bit mask of the node's
#: outputs (bit k: output k, in the op schema's order) that the graph reads
OUTPUTS_READ = "lsnn_outputs_read"


def names_read(graph: onnx.GraphProto) -> set[str]:
    """Every value name that a node of ``graph`` or of its subgraphs takes, and the graph's outputs."""
    read = {o.name for o in graph.output}
    for node in graph.node:
        read.update(node.input)
        for a in node.attribute:
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                read |= names_read(g)
    return read


def with_outputs_read(graph: onnx.GraphProto) -> onnx.GraphProto:
    """The nodes of ``graph``, each sequence node carrying :data:`OUTPUTS_READ`."""
    read = names_read(graph)
    marked = onnx.GraphProto()
    for node in graph.node:
        copy = marked.node.add()
        copy.CopyFrom(node)
        if sequence_op(node) is not None:
            mask = sum(1 << k for k, name in enumerate(node.output) if name and name in read)
            copy.attribute.append(onnx.helper.make_attribute(OUTPUTS_READ, mask))
    return marked


def _static(d):
    """An int when the dimension is known at compile time, else None."""
    return int(d) if isinstance(d, (int, tvm.tirx.IntImm)) else None


def _shape(expr) -> list:
    ty = expr.ty if hasattr(expr, "ty") else expr.struct_info
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise CompileError(f"an input of unknown shape reached a sequence op: {expr}")
    return list(ty.shape.values)


def node_label(node: onnx.NodeProto) -> str:
    return f"node '{node.name}' ({node.domain or 'ai.onnx'}::{node.op_type})" if node.name else \
        f"a node {node.domain or 'ai.onnx'}::{node.op_type}"


def check_domain(node: onnx.NodeProto) -> None:
    """Only ONNX's standard ops and the ``ai.lsnn`` ops are compiled (an ALIF of ONNX's domain is
    rejected by the validator, for every runtime)."""
    if node.domain == DOMAIN and node.op_type not in OPS:
        raise CompileError(f"{node_label(node)}: unknown op {DOMAIN}::{node.op_type} (the domain has "
                           f"{', '.join(sorted(OPS))})")
    if node.domain not in ONNX_DOMAINS + (DOMAIN,):
        raise CompileError(f"{node_label(node)}: op {node.op_type} of domain '{node.domain}' is not supported; "
                           f"the compiler takes ONNX's standard ops and the {DOMAIN} ops "
                           f"{', '.join(sorted(OPS))}")


class LSNNImporter(ONNXGraphImporter):
    def __init__(self, target, shape_dict=None, dtype_dict="float32"):
        super().__init__(shape_dict or {}, dtype_dict, keep_params_in_input=False, sanitize=True)
        self.target = target

    # -- which ops are ours ------------------------------------------------
    def _check_for_unsupported_ops(self, graph: onnx.GraphProto):
        rest = onnx.GraphProto()
        for node in graph.node:
            check_domain(node)
            if sequence_op(node) is None:
                rest.node.append(node)
        try:
            super()._check_for_unsupported_ops(rest)
        except tvm.error.OpNotImplemented as e:
            raise CompileError(f"{e} (TVM's ONNX frontend cannot take them)") from e

    def _construct_nodes(self, graph: onnx.GraphProto):
        super()._construct_nodes(with_outputs_read(graph))

    def _convert_operator(self, op_name, inputs, attrs, opset):
        # only ai.lsnn nodes are named ALIF or LI here, only ONNX's is LSTM (check_domain)
        converter = {ALIF.name: self._alif, LI.name: self._li, LSTM.name: self._lstm}.get(op_name)
        if converter is not None:
            return converter(inputs, attrs)
        if op_name == "Relu":
            return self._relu(inputs[0])
        return super()._convert_operator(op_name, inputs, attrs, opset)

    def _relu(self, x):
        """ONNX's Relu keeps NaN (as onnxruntime and the reference do); TVM's lowers to
        ``max(x, 0)``, which LLVM's maxnum turns into 0 for NaN."""
        zero = relax.const(0, x.ty.dtype)
        return self.bb.emit(relax.op.where(relax.op.less(x, zero), zero, x))

    # -- helpers -----------------------------------------------------------
    def _transposed(self, w):
        """``w^T``, folded now when ``w`` is a constant (weights usually are)."""
        if isinstance(w, _CONST):
            return relax.const(np.ascontiguousarray(w.value.numpy().T))
        return self.bb.emit(relax.op.permute_dims(w))

    def _zeros(self, shape):
        return self.bb.emit(relax.op.zeros(relax.ShapeExpr(shape), F32))

    def _call(self, prim_func, name, args, out_shapes):
        gvar = self.bb.add_func(prim_func, name)
        out = [relax.TensorType(s, F32) for s in out_shapes]
        return self.bb.emit(relax.call_tir(gvar, args, out))

    def _label(self, op, attrs):
        return f"{op} node '{attrs.get('tvm_custom', {}).get('name') or '?'}'"

    def _bind(self, schema, inputs, attrs) -> dict:
        """The node's inputs by the schema's names; a missing required one is an error."""
        x = schema.bind(inputs)
        missing = [p.name for p in schema.inputs if p.required and x[p.name] is None]
        if missing:
            raise CompileError(f"{self._label(schema.name, attrs)}: required input '{missing[0]}' is missing")
        return x

    def _finite_constants(self, label, named) -> bool:
        """True when every weight is a constant (folded or given; each checked finite), so that
        a kernel may skip zero inputs (``0 * w`` is 0 only for finite ``w``)."""
        for name, w in named.items():
            if not isinstance(w, _CONST):
                return False
            bad = int(np.size(w.value.numpy()) - np.isfinite(w.value.numpy()).sum())
            if bad:
                raise CompileError(f"{label}: weight '{name}' has {bad} non-finite value(s) (NaN or Inf)")
        return True

    def _outputs_read(self, schema, attrs) -> frozenset:
        """The names of the node's outputs the graph reads (all of them in a subgraph, which is
        not marked: :func:`with_outputs_read`)."""
        mask = attrs.get(OUTPUTS_READ, -1)
        return frozenset(p.name for k, p in enumerate(schema.outputs) if mask >> k & 1)

    def _state(self, x, schema, shape):
        return [x[s.input] if x[s.input] is not None else self._zeros(shape) for s in schema.states]

    # -- converters ----------------------------------------------------------
    def _alif(self, inputs, attrs):
        x = self._bind(ALIF, inputs, attrs)
        label = self._label("ALIF", attrs)
        Tn, B, _ = _shape(x["X"])
        H = _shape(x["W"])[0]
        a = ALIF.attribute_values(attrs)
        kernel = self.target.kernel("ALIF", thr=float(a["thr"]), n_refractory=int(a["n_refractory"]),
                                    dims={"I": _static(_shape(x["W"])[1]), "H": _static(H)},
                                    finite_weights=self._finite_constants(label, {"W": x["W"], "R": x["R"]}),
                                    outputs=self._outputs_read(ALIF, attrs))
        args = [x["X"], self._transposed(x["W"]), self._transposed(x["R"]), x["beta"], x["alpha"], x["rho"]]
        return self._call(kernel, "alif", args + self._state(x, ALIF, [B, H]),
                          [[Tn, B, H]] * 3 + [[B, H]] * len(ALIF.states))

    def _li(self, inputs, attrs):
        x = self._bind(LI, inputs, attrs)
        label = self._label("LI", attrs)
        Tn, B, _ = _shape(x["X"])
        O = _shape(x["W"])[0]
        bias = x["bias"] if x["bias"] is not None else self._zeros([O])
        kernel = self.target.kernel("LI", dims={"I": _static(_shape(x["W"])[1]), "O": _static(O)},
                                    finite_weights=self._finite_constants(label, {"W": x["W"]}),
                                    outputs=self._outputs_read(LI, attrs))
        return self._call(kernel, "li", [x["X"], self._transposed(x["W"]), x["alpha"], bias,
                                         *self._state(x, LI, [B, O])], [[Tn, B, O], [B, O]])

    def _lstm_supported(self, x, attrs, label) -> None:
        for key, ok in (("direction", b"forward"), ("layout", 0), ("input_forget", 0)):
            if key in attrs and attrs[key] != ok:
                raise CompileError(f"{label}: {key}={attrs[key]!r} is not supported (only {ok!r})")
        for key in ("clip", "activations", "activation_alpha", "activation_beta"):
            if key in attrs:
                raise CompileError(f"{label}: attribute '{key}' is not supported")
        if x["sequence_lens"] is not None:
            raise CompileError(f"{label}: sequence_lens is not supported")
        if x["P"] is not None:
            raise CompileError(f"{label}: peepholes (input P) are not supported")
        if not all(isinstance(x[k], _CONST) for k in ("W", "R")) or \
                (x["B"] is not None and not isinstance(x["B"], _CONST)):
            raise CompileError(f"{label}: W, R and B must be initializers")

    def _lstm(self, inputs, attrs):
        x = self._bind(LSTM, inputs, attrs)
        label = self._label("LSTM", attrs)
        self._lstm_supported(x, attrs, label)
        self._finite_constants(label, {k: x[k] for k in ("W", "R", "B") if x[k] is not None})
        Tn, B, _ = _shape(x["X"])
        H = _shape(x["R"])[2]
        wt = relax.const(np.ascontiguousarray(x["W"].value.numpy()[0].T))
        rt = relax.const(np.ascontiguousarray(x["R"].value.numpy()[0].T))
        h4 = wt.value.shape[1]
        b = x["B"].value.numpy()[0] if x["B"] is not None else np.zeros(2 * h4, np.float32)
        bias = relax.const((b[:h4] + b[h4:]).astype(np.float32))
        h0, c0 = (self.bb.emit(relax.op.reshape(x[s.input], [B, H])) if x[s.input] is not None
                  else self._zeros([B, H]) for s in LSTM.states)
        dims = {"I": int(wt.value.shape[0]), "H": int(rt.value.shape[0])}
        kernel = self.target.kernel("LSTM", dims=dims, outputs=self._outputs_read(LSTM, attrs))
        out = self._call(kernel, "lstm", [x["X"], wt, rt, bias, h0, c0], [[Tn, B, H], [B, H], [B, H]])
        Y = self.bb.emit(relax.op.reshape(relax.TupleGetItem(out, 0), [Tn, 1, B, H]))
        Yh = self.bb.emit(relax.op.reshape(relax.TupleGetItem(out, 1), [1, B, H]))
        Yc = self.bb.emit(relax.op.reshape(relax.TupleGetItem(out, 2), [1, B, H]))
        return relax.Tuple([Y, Yh, Yc])


def to_relax(model: onnx.ModelProto, target, shape_dict=None):
    """The Relax module of ``model`` for ``target``."""
    opset = next((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), 18)
    importer = LSNNImporter(target, shape_dict)
    return importer.from_onnx(model.graph, opset)
