"""``lsnn.compiler.export``: any PyTorch module built from the suite's layers
(:class:`lsnn.reference.ALIF`, :class:`lsnn.reference.LI`) and standard modules,
to an ONNX file the compiler and every ONNX runtime take.

The work is ``torch.onnx.export`` (torch's maintained exporter): the layers'
custom ops become ``ai.lsnn::ALIF`` / ``ai.lsnn::LI`` nodes by the translation
table of :mod:`.onnx.translation`, everything else is the exporter's own. This
module only prepares the call and finishes the file:

* time and batch (dims 0 and 1 of every input) are symbolic ``T`` and ``B``
  unless ``dynamic=False``;
* arithmetic on parameters (an ALIF layer's masked ``R``) is folded into
  initializers by onnxscript's optimiser, with no size limit, so every weight
  reaches the compiler as a constant;
* outputs are ``Y`` (``Y0``, ``Y1``, ... if several) unless named;
* each ``ai.lsnn`` node is named after its layer's module path (``"encoder.alif"``),
  outputs nobody reads are dropped from it, and it gets the suite's function body;
* metadata: the suite's format and version, and each layer's configuration.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import warnings
from contextlib import contextmanager
from importlib import metadata as package_metadata
from pathlib import Path

import onnx
import onnxscript.optimizer
import torch
from torch import nn

from lsnn.reference.errors import LsnnError
from lsnn.reference.files import atomic_write, check_file_destination
from lsnn.reference.layers import LAYERS

from .onnx.functions import attach
from .onnx.schema import DOMAIN, ONNX_OPSET, OPS
from .onnx.translation import TABLE

FORMAT = "lsnn-onnx/1"
IR_VERSION = 10  # what onnxruntime 1.32 and onnx 1.23 both read
SEQUENCE_DIMS = ("T", "B")  # dims 0 and 1 of a sequence input
_NO_LIMIT = 1 << 40  # constant folding of parameter arithmetic, whatever its size
_SCOPES = "pkg.torch.onnx.name_scopes"


class ExportError(LsnnError):
    """A module or example input that cannot be exported to ONNX."""


def export(module: nn.Module, example_input, path: str | Path | None = None, *, dynamic: bool = True,
           input_names: list[str] | None = None, output_names: list[str] | None = None,
           dynamic_shapes=None, metadata: dict | None = None) -> onnx.ModelProto:
    """Export ``module`` called on ``example_input`` (a tensor, or a tuple of them) to ONNX.

    Inputs are sequences ``[T, B, ...]``: with ``dynamic`` (the default) every input's dims 0
    and 1 are the symbols ``T`` and ``B``, else the example's sizes are fixed in the file.
    ``dynamic_shapes`` (as ``torch.export`` takes them) overrides that for other layouts.
    The model is checked by ``onnx.checker`` and strict shape inference, then written
    atomically to ``path`` if given. The module is exported in eval mode and left as it was.
    """
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    _check_inputs(module, args)
    destination = check_file_destination(path, "ONNX model") if path is not None else None
    if dynamic_shapes is None and dynamic:
        dynamic_shapes = sequence_shapes(len(args))
        args = tuple(_traceable(a) for a in args)
    program = _torch_export(module, args, input_names, output_names, dynamic_shapes)
    onnxscript.optimizer.optimize(program.model, input_size_limit=_NO_LIMIT, output_size_limit=_NO_LIMIT)
    if output_names is None:
        _name_outputs(program.model.graph.outputs)
    proto = program.model_proto
    _name_layers(proto, module)
    _drop_unread_outputs(proto)
    proto = attach(proto)
    proto.ir_version = IR_VERSION
    proto.producer_name, proto.producer_version = "lsnn", suite_version()
    _set_metadata(proto, {"lsnn.format": FORMAT, "lsnn.version": suite_version(),
                          "lsnn.module": type(module).__qualname__, "lsnn.layers": layer_configs(module),
                          **(metadata or {})})
    onnx.checker.check_model(proto, full_check=True)
    onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True)
    if destination is not None:
        atomic_write(destination, lambda f: f.write(proto.SerializeToString()))
    return proto


def sequence_shapes(n_inputs: int, *, state_inputs: int = 0) -> tuple:
    """``dynamic_shapes`` for ``n_inputs`` sequences ``[T, B, ...]`` followed by
    ``state_inputs`` state tensors ``[B, ...]``, all sharing one ``T`` and one ``B``."""
    T, B = (torch.export.Dim(name) for name in SEQUENCE_DIMS)
    return tuple({0: T, 1: B} for _ in range(n_inputs)) + tuple({0: B} for _ in range(state_inputs))


def suite_version() -> str:
    try:
        return package_metadata.version("lsnn")
    except package_metadata.PackageNotFoundError:
        return "unknown"


def layer_configs(module: nn.Module) -> list[dict]:
    """``[{"name": module path, "op": "ALIF" | "LI", "config": {...}}]`` of every suite layer in ``module``."""
    return [{"name": name, "op": type(layer).__name__, "config": dataclasses.asdict(layer.config)}
            for name, layer in module.named_modules() if isinstance(layer, LAYERS)]


def _check_inputs(module, args) -> None:
    if not isinstance(module, nn.Module):
        raise ExportError(f"export takes a torch.nn.Module, got {type(module).__name__}")
    for k, a in enumerate(args):
        if not isinstance(a, torch.Tensor):
            raise ExportError(f"example input {k} must be a tensor, got {type(a).__name__}")
        if a.dtype != torch.float32:
            raise ExportError(f"example input {k} must be float32 (the ai.lsnn ops' type), got {a.dtype}")
        if a.dim() < 2:
            raise ExportError(f"example input {k} has shape {list(a.shape)}: a sequence input is [T, B, ...]")


def _traceable(x: torch.Tensor) -> torch.Tensor:
    """``x`` with dims 0 and 1 at least 2 long: ``torch.export`` fixes a dim of size 0 or 1
    instead of making it symbolic. Only shapes are traced, so repeated data does no harm."""
    for dim in (0, 1):
        if x.shape[dim] < 2:
            x = x.repeat_interleave(2, dim=dim) if x.shape[dim] == 1 else x.new_zeros(
                *x.shape[:dim], 2, *x.shape[dim + 1:])
    return x


@contextmanager
def _quiet():
    """Keep the exporter's notes (optional torchvision ops, deprecations) off the user's terminal."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _torch_export(module, args, input_names, output_names, dynamic_shapes):
    was_training = module.training
    module.eval()
    try:
        with _quiet(), torch.no_grad():
            return torch.onnx.export(module, args, dynamo=True, custom_translation_table=TABLE,
                                     dynamic_shapes=dynamic_shapes, input_names=input_names,
                                     output_names=output_names, opset_version=ONNX_OPSET,
                                     optimize=False, verbose=False)
    except torch.onnx.errors.OnnxExporterError as e:
        raise ExportError(f"torch.onnx.export could not export {type(module).__name__}: {_root_cause(e)}") from e
    finally:
        module.train(was_training)


def _root_cause(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _name_outputs(outputs) -> None:
    """The exporter names outputs after its last node (``getitem_14``): call them ``Y``, or
    ``Y0``, ``Y1``, ... when the module returns several."""
    names = ["Y"] if len(outputs) == 1 else [f"Y{k}" for k in range(len(outputs))]
    for value, name in zip(outputs, names):
        value.name = name


def _name_layers(proto: onnx.ModelProto, module: nn.Module) -> None:
    """Name each ``ai.lsnn`` node after the module path of its layer (``"a1"``, ``"encoder.0"``):
    the exporter names a parameter's initializer by its path (``"encoder.0.W"``), and the scopes it
    records serve a layer whose weights were computed; a layer called twice gets ``#2``, ``#3``, ..."""
    paths = {f"{name}.W": name for name, layer in module.named_modules() if isinstance(layer, LAYERS)}
    seen: dict[str, int] = {}
    for node in proto.graph.node:
        if node.domain != DOMAIN:
            continue
        path = paths.get(node.input[1]) if len(node.input) > 1 else None
        if path is None:
            scopes = next((json.loads(m.value.replace("'", '"')) for m in node.metadata_props if m.key == _SCOPES), [])
            path = ".".join(scopes[1:-1]) or node.op_type.lower()
        seen[path] = seen.get(path, 0) + 1
        node.name = path if seen[path] == 1 else f"{path}#{seen[path]}"


def _drop_unread_outputs(proto: onnx.ModelProto) -> None:
    """Outputs of ``ai.lsnn`` nodes that no node and no graph output reads become ``""``
    (the op does not compute them), trailing ones removed."""
    graph = proto.graph
    read = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    for node in graph.node:
        if node.domain == DOMAIN and node.op_type in OPS:
            names = [o if o in read else "" for o in node.output]
            while names and not names[-1]:
                names.pop()
            del node.output[:]
            node.output.extend(names)


def _set_metadata(proto: onnx.ModelProto, meta: dict) -> None:
    onnx.helper.set_model_props(proto, {k: v if isinstance(v, str) else json.dumps(v, sort_keys=True)
                                        for k, v in meta.items()})
