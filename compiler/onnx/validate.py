"""Checks of an ONNX model against the ``ai.lsnn`` spec, before anything runs.

Errors name the file or node and the input: a corrupt file, an unknown
``ai.lsnn`` op or opset version (exactly 1), a missing required input, a wrong
shape, a dtype other than float32, a negative ``n_refractory``, a non-finite
float attribute, and feeds with no time step or no sequence. The ``ai.lsnn`` nodes are
walked in graph order and each one's outputs get the shapes its inputs make, so a
size that disagrees further down (an ``initial_y`` of another B than the ALIF before
it) is found too; :func:`validate` returns the graph's dimension names that the
constants pin, which the compiled targets write into their manifests.
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


def validate(model: onnx.ModelProto, shapes: dict[str, tuple] | None = None) -> dict[str, int]:
    """Reject what ``shared/spec/ops.md`` rejects. ``shapes`` may give concrete input shapes
    (name -> shape) to check a run before it starts. Returns the graph's named dimensions
    (``dim_param``) that the model pins to a size through its constants (an initializer
    ``initial_y`` of shape ``[1, O]`` pins the ``B`` of the ``X`` it runs on to 1)."""
    versions = {o.domain: o.version for o in model.opset_import}
    lsnn_nodes = [(i, n) for i, n in enumerate(model.graph.node) if n.domain == DOMAIN]
    if lsnn_nodes and DOMAIN not in versions:
        raise ModelError(f"the model uses {DOMAIN} ops but imports no {DOMAIN} opset")
    if versions.get(DOMAIN, VERSION) != VERSION:
        raise ModelError(f"{DOMAIN} opset version {versions[DOMAIN]} is not supported (this suite implements "
                         f"version {VERSION} only)")
    if not lsnn_nodes and not model.graph.node:
        raise ModelError("the model has no nodes")
    for i, node in enumerate(model.graph.node):
        if node.domain in ONNX_DOMAINS and node.op_type in OPS:
            raise ModelError(f"{_node_label(node, i)}: {node.op_type} of domain '{node.domain}' is not an ONNX "
                             f"op; the LSNN op is {DOMAIN}::{node.op_type} (give the node domain '{DOMAIN}')")
    types = _value_types(_with_shapes(model, shapes) if shapes else model)
    pinned = _Pins()
    for i, node in lsnn_nodes:  # in graph order: a node sees the shapes of the nodes before it
        label = _node_label(node, i)
        schema = _check_node(node, label)
        sizes, params = _bind(node, schema, label, types)
        pinned.add(params, sizes, label)
        _record_outputs(node, schema, sizes, params, types)
    return pinned.sizes


def declared_shape(vi: onnx.ValueInfoProto, pinned: dict[str, int] | None = None) -> list | None:
    """The shape ``vi`` declares: sizes and dimension names (``"?"`` for an unnamed one), each name
    in ``pinned`` (what :func:`validate` returns) replaced by its size; None where it declares none."""
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (pinned or {}).get(d.dim_param, d.dim_param or "?")
            for d in t.shape.dim]


def _with_shapes(model: onnx.ModelProto, shapes: dict[str, tuple]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph inputs named in ``shapes`` have those concrete shapes."""
    typed = onnx.ModelProto()
    typed.CopyFrom(model)
    for vi in typed.graph.input:
        if vi.name in shapes:
            dims = vi.type.tensor_type.shape.dim
            del dims[:]
            for d in shapes[vi.name]:
                dims.add().dim_value = int(d)
    return typed


def _check_node(node: onnx.NodeProto, label: str):
    """The schema of an ``ai.lsnn`` node, after its op, arity, outputs and attributes are checked."""
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
    return schema


def _bind(node: onnx.NodeProto, schema, label: str, types: dict) -> tuple[dict[str, int], dict[str, set]]:
    """The spec's symbols (T, B, I, H, O) of ``node`` bound from its inputs' types: their sizes, and
    the graph's dimension names each symbol meets. Inputs that disagree on a size are a ModelError."""
    sizes: dict[str, int] = {}
    params: dict[str, set] = {}
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
            if isinstance(dim, str):
                params.setdefault(sym, set()).add(dim)
            if not isinstance(dim, int) or dim == 0 and sym in ("T", "B"):
                continue  # symbolic or unknown
            if sym in sizes and sizes[sym] != dim:
                raise ModelError(f"{label}: input '{port.name}' ('{name}') has shape {list(shape)}, but "
                                 f"{sym} = {sizes[sym]} from the other inputs (expected "
                                 f"[{', '.join(str(sizes.get(s, s)) for s in port.shape)}])")
            sizes[sym] = dim
    return sizes, params


def _record_outputs(node: onnx.NodeProto, schema, sizes: dict, params: dict, types: dict) -> None:
    """Give ``node``'s outputs the shapes its bound symbols make (Z: [T, B, H], final_y: [B, O]...),
    so that a node reading them checks its other inputs against them. A size the types already
    hold is kept where the symbol is unbound; a symbol bound to nothing stays unknown."""
    for port, name in zip(schema.outputs, node.output):
        if not name:
            continue
        _, known = types.get(name, (TensorProto.FLOAT, None))
        if known is not None and len(known) != len(port.shape):
            known = None
        shape = []
        for k, sym in enumerate(port.shape):
            old = known[k] if known is not None else None
            named = sorted(params.get(sym, ()))
            shape.append(sizes[sym] if sym in sizes else old if isinstance(old, int) or not named else named[0])
        types[name] = (TensorProto.FLOAT, tuple(shape))


class _Pins:
    """Graph dimension names pinned to sizes, and the node that pinned each."""

    def __init__(self):
        self.sizes: dict[str, int] = {}
        self.by: dict[str, str] = {}

    def add(self, params: dict[str, set], sizes: dict[str, int], label: str) -> None:
        for sym, names in params.items():
            if sym not in sizes or sizes[sym] == 0:
                continue
            for name in sorted(names):
                if self.sizes.setdefault(name, sizes[sym]) != sizes[sym]:
                    raise ModelError(f"{label}: its inputs make {sym} = {sizes[sym]}, but the graph's dimension "
                                     f"'{name}' is fixed to {self.sizes[name]} by {self.by[name]}")
                self.by.setdefault(name, label)


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
