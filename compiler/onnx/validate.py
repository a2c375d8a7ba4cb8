"""Checks of an ONNX model against the ``ai.lsnn`` spec, before anything runs.

Errors name the file or node and the input: a corrupt file, an unknown
``ai.lsnn`` op or opset version, a missing required input, a wrong shape, a
dtype other than float32, a negative ``n_refractory``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from .schema import DOMAIN, OPS, VERSION
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
    except Exception as e:  # protobuf raises DecodeError, onnx may raise others
        raise ModelError(f"{path}: not a valid ONNX file ({type(e).__name__}: {e})") from e
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: not a valid ONNX file (empty graph)")
    return model


def _node_label(node: onnx.NodeProto, index: int) -> str:
    return f"node '{node.name}' ({node.domain}::{node.op_type})" if node.name else \
        f"node #{index} ({node.domain}::{node.op_type})"


def _value_types(model: onnx.ModelProto) -> dict[str, tuple[int, tuple]]:
    """name -> (elem_type, shape with ints, strings or None) for every value whose type is known."""
    try:
        from .functions import attach

        inferred = onnx.shape_inference.infer_shapes(attach(model), check_type=False, strict_mode=False)
    except Exception:  # inference is a help here, never the judge
        inferred = model
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


def validate(model: onnx.ModelProto, shapes: dict[str, tuple] | None = None) -> None:
    """Reject what ``shared/spec/ops.md`` rejects. ``shapes`` may give concrete input shapes
    (name -> shape) to check a run before it starts."""
    versions = {o.domain: o.version for o in model.opset_import}
    lsnn_nodes = [(i, n) for i, n in enumerate(model.graph.node) if n.domain == DOMAIN]
    if lsnn_nodes and DOMAIN not in versions:
        raise ModelError(f"the model uses {DOMAIN} ops but imports no {DOMAIN} opset")
    if versions.get(DOMAIN, VERSION) > VERSION:
        raise ModelError(f"{DOMAIN} opset version {versions[DOMAIN]} is not supported (this suite implements "
                         f"version {VERSION})")
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
        for a in node.attribute:
            if a.name not in schema.attributes:
                raise ModelError(f"{label}: unknown attribute '{a.name}'")
            kind = schema.attributes[a.name][0]
            want = {"float": onnx.AttributeProto.FLOAT, "int": onnx.AttributeProto.INT}[kind]
            if a.type != want:
                raise ModelError(f"{label}: attribute '{a.name}' must be a {kind}")
            if a.name == "n_refractory" and a.i < 0:
                raise ModelError(f"{label}: attribute 'n_refractory' must be >= 0, got {a.i}")
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
    validate(model, {k: v.shape for k, v in inputs.items()})
