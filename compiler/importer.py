"""ONNX to Relax: TVM's own ONNX importer, extended by subclassing.

Standard ops go through TVM's converters. ``ai.lsnn::ALIF``, ``ai.lsnn::LI``
and ONNX ``LSTM`` go to ours, whether or not the model carries function
bodies (the importer never reads them): each becomes one ``call_tir`` of the
target's kernel, with the time loop inside.
"""
from __future__ import annotations

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend.onnx.onnx_frontend import ONNXGraphImporter

from lsnn.compiler.onnx.schema import ALIF, DOMAIN, LI
from lsnn.reference.errors import LsnnError

OURS = {"ALIF", "LI", "LSTM"}
_CONST = tvm.ir.expr.Constant
F32 = "float32"


class CompileError(LsnnError):
    """A model the compiler cannot take, with the node and the reason."""


def _static(d):
    """An int when the dimension is known at compile time, else None."""
    return int(d) if isinstance(d, (int, tvm.tirx.IntImm)) else None


def _shape(expr) -> list:
    ty = expr.ty if hasattr(expr, "ty") else expr.struct_info
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        raise CompileError(f"an input of unknown shape reached a sequence op: {expr}")
    return list(ty.shape.values)


class LSNNImporter(ONNXGraphImporter):
    def __init__(self, target, shape_dict=None, dtype_dict="float32"):
        super().__init__(shape_dict or {}, dtype_dict, keep_params_in_input=False, sanitize=True)
        self.target = target
        self._node_names: list[str] = []

    # -- which ops are ours ------------------------------------------------
    def _check_for_unsupported_ops(self, graph: onnx.GraphProto):
        rest = onnx.GraphProto()
        for node in graph.node:
            if node.domain == DOMAIN and node.op_type not in (ALIF.name, LI.name):
                raise CompileError(f"node '{node.name}': unknown op {DOMAIN}::{node.op_type}")
            if node.op_type not in OURS:
                rest.node.append(node)
        try:
            super()._check_for_unsupported_ops(rest)
        except Exception as e:  # tvm.error.OpNotImplemented
            raise CompileError(f"{e} (TVM's ONNX frontend cannot take them)") from e

    def _convert_operator(self, op_name, inputs, attrs, opset):
        if op_name == "ALIF":
            return self._alif(inputs, attrs)
        if op_name == "LI":
            return self._li(inputs, attrs)
        if op_name == "LSTM":
            return self._lstm(inputs, attrs)
        return super()._convert_operator(op_name, inputs, attrs, opset)

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

    def _label(self, attrs):
        return attrs.get("tvm_custom", {}).get("name") or "?"

    # -- converters ----------------------------------------------------------
    def _alif(self, inputs, attrs):
        X, W, R, beta, alpha, rho = (inputs[i] for i in range(6))
        if any(t is None for t in (X, W, R, beta, alpha, rho)):
            raise CompileError(f"ALIF node '{self._label(attrs)}': a required input is missing")
        Tn, B, _ = _shape(X)
        H = _shape(W)[0]
        state = [inputs[6 + k] if inputs[6 + k] is not None else self._zeros([B, H]) for k in range(4)]
        thr = float(attrs.get("thr", ALIF.attributes["thr"][1]))
        n_ref = int(attrs.get("n_refractory", ALIF.attributes["n_refractory"][1]))
        dims = {"I": _static(_shape(W)[1]), "H": _static(H)}
        kernel = self.target.kernel("ALIF", thr=thr, n_refractory=n_ref, dims=dims)
        return self._call(kernel, "alif", [X, self._transposed(W), self._transposed(R), beta, alpha, rho, *state],
                          [[Tn, B, H]] * 3 + [[B, H]] * 4)

    def _li(self, inputs, attrs):
        X, W, alpha = inputs[0], inputs[1], inputs[2]
        if any(t is None for t in (X, W, alpha)):
            raise CompileError(f"LI node '{self._label(attrs)}': a required input is missing")
        Tn, B, _ = _shape(X)
        O = _shape(W)[0]
        bias = inputs[3] if inputs[3] is not None else self._zeros([O])
        y0 = inputs[4] if inputs[4] is not None else self._zeros([B, O])
        dims = {"I": _static(_shape(W)[1]), "O": _static(O)}
        return self._call(self.target.kernel("LI", dims=dims), "li", [X, self._transposed(W), alpha, bias, y0],
                          [[Tn, B, O], [B, O]])

    def _lstm(self, inputs, attrs):
        label = self._label(attrs)
        for key, ok in (("direction", b"forward"), ("layout", 0), ("input_forget", 0)):
            if key in attrs and attrs[key] != ok:
                raise CompileError(f"LSTM node '{label}': {key}={attrs[key]!r} is not supported (only {ok!r})")
        for key in ("clip", "activations", "activation_alpha", "activation_beta"):
            if key in attrs:
                raise CompileError(f"LSTM node '{label}': attribute '{key}' is not supported")
        if inputs[4] is not None:
            raise CompileError(f"LSTM node '{label}': sequence_lens is not supported")
        if inputs[7] is not None:
            raise CompileError(f"LSTM node '{label}': peepholes (input P) are not supported")
        X, W, R, Bias = inputs[0], inputs[1], inputs[2], inputs[3]
        Tn, B, _ = _shape(X)
        H = _shape(R)[2]
        if not all(isinstance(t, _CONST) for t in (W, R)) or (Bias is not None and
                                                                     not isinstance(Bias, _CONST)):
            raise CompileError(f"LSTM node '{label}': W, R and B must be initializers")
        wt = relax.const(np.ascontiguousarray(W.value.numpy()[0].T))
        rt = relax.const(np.ascontiguousarray(R.value.numpy()[0].T))
        h4 = wt.value.shape[1]
        b = Bias.value.numpy()[0] if Bias is not None else np.zeros(2 * h4, np.float32)
        bias = relax.const((b[:h4] + b[h4:]).astype(np.float32))
        h0 = self.bb.emit(relax.op.reshape(inputs[5], [B, H])) if inputs[5] is not None else self._zeros([B, H])
        c0 = self.bb.emit(relax.op.reshape(inputs[6], [B, H])) if inputs[6] is not None else self._zeros([B, H])
        dims = {"I": int(wt.value.shape[0]), "H": int(rt.value.shape[0])}
        out = self._call(self.target.kernel("LSTM", dims=dims), "lstm", [X, wt, rt, bias, h0, c0],
                         [[Tn, B, H], [B, H], [B, H]])
        Y = self.bb.emit(relax.op.reshape(relax.TupleGetItem(out, 0), [Tn, 1, B, H]))
        Yh = self.bb.emit(relax.op.reshape(relax.TupleGetItem(out, 1), [1, B, H]))
        Yc = self.bb.emit(relax.op.reshape(relax.TupleGetItem(out, 2), [1, B, H]))
        return relax.Tuple([Y, Yh, Yc])


def to_relax(model: onnx.ModelProto, target, shape_dict=None):
    """The Relax module of ``model`` for ``target``."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    importer = LSNNImporter(target, shape_dict)
    return importer.from_onnx(model.graph, opset)
