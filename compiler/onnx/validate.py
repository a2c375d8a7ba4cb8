"""Checks of an ONNX model against the ``ai.lsnn`` spec, before anything runs.

Errors name the file or node and the input: a corrupt file, an unknown
``ai.lsnn`` op or opset version (exactly 1), a missing required input, a wrong
shape, a dtype other than float32, a negative ``n_refractory``, a non-finite
float attribute, and feeds with no time step or no sequence.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

from .schema import DOMAIN, ONNX_DOMAINS, OPS, VERSION, sequence_op
from lsnn.reference.errors import LsnnError, MissingFileError


class ModelError(LsnnError):
    """A model that the spec, or the runtime it is fed to, rejects."""


def load(path: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(path, onnx.ModelProto):
        return path
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
    except (DecodeError, OSError) as e:  # not protobuf; external data missing or unreadable
        raise ModelError(f"{path}: not a valid ONNX file ({type(e).__name__}: {e})") from e
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: not a valid ONNX file (empty graph)")
    return model


def _node_label(node: onnx.NodeProto, index: int) -> str:
    op = f"{node.domain or 'ai.onnx'}::{node.op_type}"
    return f"node '{node.name}' ({op})" if node.name else f"node #{index} ({op})"


def _value_types(model: onnx.ModelProto) -> dict[str, tuple[int, tuple]]:
    """name -> (elem_type, shape with ints, strings or None) for every value whose type is known."""
    try:
        from .functions import attach

        inferred = onnx.shape_inference.infer_shapes(attach(model), check_type=False, strict_mode=False)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        inferred = model  # inference is a help here, never the judge
    out = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            continue
        shape = None
        if t.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
        out[vi.name] = (t.elem_type, shape)
    for init in model.graph.initializer:
        out[init.name] = (init.data_type, tuple(init.dims))
    return out


def _check_attributes(node: onnx.NodeProto, schema, label: str) -> None:
    for a in node.attribute:
        if a.name not in schema.attributes:
            raise ModelError(f"{label}: unknown attribute '{a.name}'")
        kind = schema.attributes[a.name][0]
        want = {"float": onnx.AttributeProto.FLOAT, "int": onnx.AttributeProto.INT}[kind]
        if a.type != want:
            raise ModelError(f"{label}: attribute '{a.name}' must be a {kind}")
        if kind == "float" and not math.isfinite(a.f):
            raise ModelError(f"{label}: attribute '{a.name}' must be finite, got {a.f}")
        if a.name == "n_refractory" and a.i < 0:
            raise ModelError(f"{label}: attribute 'n_refractory' must be >= 0, got {a.i}")


def validate(model: onnx.ModelProto, shapes: dict[str, tuple] | None = None) -> None:
    """Reject what ``shared/spec/ops.md`` rejects. ``shapes`` may give concrete input shapes
    (name -> shape) to check a run before it starts."""
    versions = {o.domain: o.version for o in model.opset_import}
    lsnn_nodes = [(i, n) for i, n in enumerate(model.graph.node) if n.domain == DOMAIN]
    if lsnn_nodes and DOMAIN not in versions:
        raise ModelError(f"the model uses {DOMAIN} ops but imports no {DOMAIN} opset")
    if versions.get(DOMAIN, VERSION) != VERSION:
        raise ModelError(f"{DOMAIN} opset version {versions[DOMAIN]} is not supported (this suite implements "
                         f"version {VERSION} only)")
    if not lsnn_nodes and not model.graph.node:
        raise ModelError("the model has no nodes")
    typed = model
    if shapes:
        typed = onnx.ModelProto()
        typed.CopyFrom(model)
        for vi in typed.graph.input:
            if vi.name in shapes:
                dims = vi.type.tensor_type.shape.dim
                del dims[:]
                for d in shapes[vi.name]:
                    dims.add().dim_value = int(d)
    for i, node in enumerate(model.graph.node):
        if node.domain in ONNX_DOMAINS and node.op_type in OPS:
            raise ModelError(f"{_node_label(node, i)}: {node.op_type} of domain '{node.domain}' is not an ONNX "
                             f"op; the LSNN op is {DOMAIN}::{node.op_type} (give the node domain '{DOMAIN}')")
    types = _value_types(typed)
    for i, node in lsnn_nodes:
        label = _node_label(node, i)
        if node.op_type not in OPS:
            raise ModelError(f"{label}: unknown op {DOMAIN}::{node.op_type} (version {VERSION} has "
                             f"{', '.join(sorted(OPS))})")
        schema = OPS[node.op_type]
        if len(node.input) > len(schema.inputs):
            raise ModelError(f"{label}: {len(node.input)} inputs, the op takes at most {len(schema.inputs)}")
        if len(node.output) > len(schema.outputs):
            raise ModelError(f"{label}: {len(node.output)} outputs, the op has {len(schema.outputs)}")
        if not node.output or not node.output[0]:
            raise ModelError(f"{label}: output '{schema.outputs[0].name}' is required")
        _check_attributes(node, schema, label)
        bound: dict[str, object] = {}
        for k, port in enumerate(schema.inputs):
            name = node.input[k] if k < len(node.input) else ""
            if not name:
                if port.required:
                    raise ModelError(f"{label}: required input '{port.name}' is missing")
                continue
            if name not in types:
                continue  # produced by a node whose output type is unknown here
            elem, shape = types[name]
            if elem and elem != TensorProto.FLOAT:
                raise ModelError(f"{label}: input '{port.name}' ('{name}') is "
                                 f"{helper.tensor_dtype_to_np_dtype(elem).name}, the op takes float32")
            if shape is None:
                continue
            if len(shape) != len(port.shape):
                raise ModelError(f"{label}: input '{port.name}' ('{name}') has rank {len(shape)}, expected "
                                 f"{len(port.shape)} [{', '.join(port.shape)}]")
            for sym, dim in zip(port.shape, shape):
                if not isinstance(dim, int) or dim == 0 and sym in ("T", "B"):
                    continue  # symbolic or unknown
                if sym in bound and isinstance(bound[sym], int) and bound[sym] != dim:
                    raise ModelError(f"{label}: input '{port.name}' ('{name}') has shape {list(shape)}, but "
                                     f"{sym} = {bound[sym]} from the other inputs (expected "
                                     f"[{', '.join(str(bound.get(s, s)) for s in port.shape)}])")
                bound.setdefault(sym, dim)


def check_feeds(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> None:
    """Names, dtypes and ranks of the arrays fed to a model, then the spec checks with their shapes."""
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [vi for vi in model.graph.input if vi.name not in inits]
    names = {vi.name for vi in graph_inputs}
    unknown = set(inputs) - names
    if unknown:
        raise ModelError(f"unknown input(s) {sorted(unknown)}; the model takes {sorted(names)}")
    for vi in graph_inputs:
        if vi.name not in inputs:
            raise ModelError(f"missing input '{vi.name}'")
        arr = inputs[vi.name]
        want = helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if arr.dtype != want:
            raise ModelError(f"input '{vi.name}' is {arr.dtype}, the model takes {want}")
        dims = vi.type.tensor_type.shape.dim
        if len(dims) and len(dims) != arr.ndim:
            raise ModelError(f"input '{vi.name}' has shape {list(arr.shape)}, the model takes rank {len(dims)}")
        for d, n in zip(dims, arr.shape):
            if d.HasField("dim_value") and d.dim_value != n:
                want_shape = [x.dim_value if x.HasField("dim_value") else x.dim_param for x in dims]
                raise ModelError(f"input '{vi.name}' has shape {list(arr.shape)}, the model takes {want_shape}")
        _check_not_empty(vi, arr, _axis_symbols(model).get(vi.name, ()))
    validate(model, {k: v.shape for k, v in inputs.items()})


_AXIS_WORDS = {"T": "time steps", "B": "sequences"}


def _axis_symbols(model: onnx.ModelProto) -> dict[str, tuple]:
    """Graph input name -> the spec's symbols of its axes (``("T", "B", "I")``), for the inputs
    that a sequence op takes directly."""
    out = {}
    for node in model.graph.node:
        schema = sequence_op(node)
        if schema is not None:
            for port, name in zip(schema.inputs, node.input):
                if name:
                    out.setdefault(name, port.shape)
    return out


def _check_not_empty(vi, arr: np.ndarray, symbols: tuple) -> None:
    """No axis of a fed array may be 0: a run has at least one time step and one sequence."""
    dims = vi.type.tensor_type.shape.dim
    for k, n in enumerate(arr.shape):
        if n:
            continue
        sym = symbols[k] if k < len(symbols) else (dims[k].dim_param if k < len(dims) else "") or f"axis {k}"
        what = _AXIS_WORDS.get(sym, "entries")
        raise ModelError(f"input '{vi.name}' has {sym} = 0 {what} (shape {list(arr.shape)}); "
                         f"a run needs at least one")
