"""ONNX standard ops where TVM's converter is wrong or fails: our converters, or a refusal.

ONNX's own node test cases (``tests/onnx_node_cases.py``) found each of these. An override is
a function ``(bb, inputs, attrs, label, tvm) -> relax.Expr``: ``bb`` the block builder, ``attrs``
the node's attributes as TVM's importer parses them, ``label`` the node as errors name it and
``tvm(inputs, attrs)`` TVM's own converter, for the cases it gets right. A case an override
cannot take raises :class:`~lsnn.compiler.errors.CompileError` naming the node and the reason.

:data:`CONSTANT_INPUTS` names the inputs that TVM's converters read at compile time: given as a
value computed at run time (a graph input, or a tensor a node computes), TVM fails or, for
``Expand``, broadcasts to the wrong shape; the importer refuses such a node first.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant

from lsnn.compiler.errors import CompileError


_REDUCE_AXES = {1: "axes"}

#: op -> {input index: input name}: inputs TVM's converter needs as constants (or as a shape
#: that ``Shape`` and its kin compute, which TVM tracks at compile time).
CONSTANT_INPUTS = {
    "Reshape": {1: "shape"}, "Expand": {1: "shape"}, "Split": {1: "split"},
    "Pad": {1: "pads", 2: "constant_value", 3: "axes"},
    "ReduceMean": _REDUCE_AXES, "ReduceSum": _REDUCE_AXES, "ReduceMax": _REDUCE_AXES, "ReduceMin": _REDUCE_AXES,
    "ReduceProd": _REDUCE_AXES, "ReduceL1": _REDUCE_AXES, "ReduceL2": _REDUCE_AXES,
    "ReduceLogSum": _REDUCE_AXES, "ReduceLogSumExp": _REDUCE_AXES, "ReduceSumSquare": _REDUCE_AXES,
}


def known_at_compile_time(expr) -> bool:
    """A constant, or a shape TVM computes while importing (from ``Shape``, ``Concat`` of shapes...)."""
    return isinstance(expr, Constant) or isinstance(getattr(expr, "ty", None), relax.ShapeType)


def check_constant_inputs(op: str, inputs, label: str) -> None:
    for index, name in CONSTANT_INPUTS.get(op, {}).items():
        if index < len(inputs) and inputs[index] is not None and not known_at_compile_time(inputs[index]):
            raise CompileError(f"{label}: input '{name}' is computed at run time; the compiler takes it only as "
                               f"a constant (an initializer or a Constant node)")


def _const_value(expr):
    return expr.value.numpy() if isinstance(expr, Constant) else None


def _dtype(expr) -> str:
    return str(expr.ty.dtype)


def _spatial_shape(expr, label: str, what: str) -> list[int]:
    """The sizes after the batch and channel dimensions, which must be known at compile time."""
    shape = getattr(expr.ty, "shape", None)
    if shape is None or not all(isinstance(d, tvm.tirx.IntImm) for d in shape.values[2:]):
        raise CompileError(f"{label}: the spatial sizes of {what} must be known at compile time")
    return [int(d) for d in shape.values[2:]]


# -- the overrides ---------------------------------------------------------------------------
def relu(bb, inputs, attrs, label, tvm_convert):
    """ONNX's Relu keeps NaN (as onnxruntime and the reference do); TVM's lowers to ``max(x, 0)``,
    which LLVM's maxnum turns into 0 for NaN."""
    x = inputs[0]
    zero = relax.const(0, _dtype(x))
    return bb.emit(relax.op.where(relax.op.less(x, zero), zero, x))


def layer_normalization(bb, inputs, attrs, label, tvm_convert):
    """TVM computes ``Y`` but gives scalars for ``Mean`` and ``InvStdDev``: both are the
    statistics over the normalised axes, of the data's shape with those axes 1."""
    x = inputs[0]
    rank = x.ty.ndim  # the sizes may be symbolic (a batch or time dimension)
    axis = int(attrs.get("axis", -1)) % rank
    if int(attrs.get("stash_type", 1)) != 1:
        raise CompileError(f"{label}: stash_type={attrs['stash_type']} is not supported (only 1: float32)")
    y = bb.emit(relax.TupleGetItem(bb.emit(tvm_convert(inputs, attrs)), 0))
    axes = list(range(axis, rank))
    mean = bb.emit(relax.op.mean(x, axes, keepdims=True))
    centred = bb.emit(relax.op.subtract(x, mean))
    var = bb.emit(relax.op.mean(relax.op.multiply(centred, centred), axes, keepdims=True))
    eps = relax.const(float(attrs.get("epsilon", 1e-5)), _dtype(x))
    inv_std = bb.emit(relax.op.rsqrt(relax.op.add(var, eps)))
    return relax.Tuple([y, mean, inv_std])


def conv_transpose(bb, inputs, attrs, label, tvm_convert):
    """TVM ignores ``output_shape``: the pads it implies (ONNX's formula, floor division as the
    reference implementation has it) go to TVM's converter instead, a negative end pad as
    ``output_padding``."""
    if "output_shape" not in attrs:
        return tvm_convert(inputs, attrs)
    spatial = _spatial_shape(inputs[0], label, "input 'X'")
    n = len(spatial)
    kernel = list(attrs.get("kernel_shape") or _spatial_shape(inputs[1], label, "input 'W'"))
    strides = list(attrs.get("strides", [1] * n))
    dilations = list(attrs.get("dilations", [1] * n))
    out_pad = list(attrs.get("output_padding", [0] * n))
    upper = attrs.get("auto_pad", b"NOTSET") in (b"SAME_UPPER", "SAME_UPPER")
    begin, end = [], []
    for i, want in enumerate(attrs["output_shape"][-n:]):
        total = strides[i] * (spatial[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - want
        first = total // 2 if upper else total - total // 2
        begin.append(first)
        end.append(total - first)
    out_pad = [p - min(e, 0) for p, e in zip(out_pad, end)]
    if min(begin) < 0 or any(p >= max(s, d) for p, s, d in zip(out_pad, strides, dilations)):
        raise CompileError(f"{label}: output_shape {list(attrs['output_shape'])} needs pads {begin + end}, "
                           f"which TVM's conv_transpose cannot take")
    rest = {k: v for k, v in attrs.items() if k not in ("output_shape", "auto_pad")}
    return tvm_convert(inputs, {**rest, "pads": begin + [max(e, 0) for e in end], "output_padding": out_pad})


def dropout(bb, inputs, attrs, label, tvm_convert):
    """Inference: the output is the input and the mask all true (TVM gives a float mask). Training
    mode draws random numbers, which a compiled inference model does not."""
    training = inputs[2] if len(inputs) > 2 else None
    if training is not None and (_const_value(training) is None or bool(_const_value(training))):
        raise CompileError(f"{label}: training_mode must be a constant false (dropout at training time "
                           f"draws random numbers; the compiler compiles inference)")
    x = inputs[0]
    mask = bb.emit(relax.op.ones_like(x, "bool"))
    return relax.Tuple([x, mask])


def batch_normalization(bb, inputs, attrs, label, tvm_convert):
    """TVM's running statistics weigh the batch by ``momentum`` where ONNX weighs the running
    value by it: ONNX's ``momentum`` is TVM's ``1 - momentum``."""
    if not attrs.get("training_mode", 0):
        return tvm_convert(inputs, attrs)
    return tvm_convert(inputs, {**attrs, "momentum": 1.0 - float(attrs.get("momentum", 0.9))})


_CONSTANT_ATTRIBUTES = {"value_float": np.float32, "value_floats": np.float32,
                        "value_int": np.int64, "value_ints": np.int64}


def constant(bb, inputs, attrs, label, tvm_convert):
    """TVM reads ``value`` alone; ONNX's Constant may give a float, an int or a list of them."""
    if "value" in attrs:
        return tvm_convert(inputs, attrs)
    for name, dtype in _CONSTANT_ATTRIBUTES.items():
        if name in attrs:
            return relax.const(np.asarray(attrs[name], dtype))
    raise CompileError(f"{label}: a Constant of {', '.join(sorted(attrs.keys() - {'tvm_custom'}))} is not "
                       f"supported (only value, value_float(s) and value_int(s))")


def power(bb, inputs, attrs, label, tvm_convert):
    """ONNX's Pow gives the base's type for any exponent type; TVM takes only equal float types.
    A float base takes the exponent cast to its type; an integer base is raised in float64 and
    truncated back, as the reference does (``np.power(x, y).astype(x.dtype)``)."""
    x, y = inputs
    if _dtype(x) == _dtype(y) and _dtype(x).startswith("float"):
        return tvm_convert(inputs, attrs)
    if _dtype(x).startswith("float"):
        return relax.op.power(x, relax.op.astype(y, _dtype(x)))
    wide = relax.op.power(relax.op.astype(x, "float64"), relax.op.astype(y, "float64"))
    return relax.op.astype(wide, _dtype(x))


def max_pool(bb, inputs, attrs, label, tvm_convert):
    """TVM computes the pooled values only, not the ``Indices`` of the maxima."""
    if attrs["tvm_custom"]["num_outputs"] > 1:
        raise CompileError(f"{label}: output 'Indices' is not supported (only the pooled values 'Y')")
    return tvm_convert(inputs, attrs)


#: ONNX op name -> our converter
OVERRIDES = {
    "Relu": relu,
    "LayerNormalization": layer_normalization,
    "ConvTranspose": conv_transpose,
    "Dropout": dropout,
    "BatchNormalization": batch_normalization,
    "Constant": constant,
    "Pow": power,
    "MaxPool": max_pool,
}
