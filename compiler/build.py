"""``compile(model, target)``: ONNX file or proto in, runnable :class:`Artifact` out."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, numpy_helper

from lsnn.compiler.onnx.validate import declared_shape, load as load_onnx, validate
from lsnn.targets.artifact import FORMAT, Artifact
from lsnn.targets.base import get_target
from lsnn.reference.errors import LsnnError

from .importer import TVM_ERRORS, CompileError, check_domain, to_relax


def _io(values, what: str, pinned: dict[str, int] | None = None) -> list[dict]:
    """Name, shape (:func:`~lsnn.compiler.onnx.validate.declared_shape`) and dtype of each value
    (graph inputs or outputs: ``what``); a value that is not a tensor is refused."""
    from onnx import helper

    for vi in values:
        if not vi.type.HasField("tensor_type"):
            raise CompileError(f"graph {what} '{vi.name}' is a(n) "
                               f"{vi.type.WhichOneof('value') or 'untyped'} value, not a tensor; the compiler "
                               f"takes tensors")
    return [{"name": vi.name, "shape": declared_shape(vi, pinned),
             "dtype": helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type).name} for vi in values]


def source_manifest(proto: onnx.ModelProto, source: bytes, pinned: dict[str, int]) -> dict:
    """What every artifact's manifest says of its source model: its SHA-256, the graph inputs (not
    initializers) with the sizes the model pins through its constants (``pinned``, what
    :func:`validate` returns: an initial state ``[1, O]`` makes X's B 1), so that a run with
    another size is refused before it starts, and the graph outputs as declared."""
    inits = {i.name for i in proto.graph.initializer}
    return {"source_sha256": hashlib.sha256(source).hexdigest(),
            "inputs": _io([vi for vi in proto.graph.input if vi.name not in inits], "input", pinned),
            "outputs": _io(proto.graph.output, "output")}


def _constants(graph: onnx.GraphProto):
    """(what, array) of every constant of ``graph`` and its subgraphs: initializers and the values
    of Constant nodes."""
    for init in graph.initializer:
        yield f"initializer '{init.name}'", numpy_helper.to_array(init)
    for node in graph.node:
        for a in node.attribute:
            if node.op_type == "Constant" and a.type in (AttributeProto.TENSOR, AttributeProto.FLOAT,
                                                         AttributeProto.FLOATS):
                value = numpy_helper.to_array(a.t) if a.type == AttributeProto.TENSOR else \
                    np.asarray(onnx.helper.get_attribute_value(a), np.float32)
                yield f"Constant node '{node.name or node.output[0]}' (output '{node.output[0]}')", value
            for sub in ([a.g] if a.type == AttributeProto.GRAPH else list(a.graphs)):
                yield from _constants(sub)


def check_finite(proto: onnx.ModelProto) -> None:
    """Reject NaN and Inf in a constant: the kernels skip zero inputs, exact only for finite
    weights (``0 * inf`` is NaN), and Cortex-M cannot write them as C."""
    for what, value in _constants(proto.graph):
        if np.issubdtype(value.dtype, np.floating):
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            if bad:
                raise CompileError(f"{what} has {bad} non-finite value(s) (NaN or Inf) among {value.size}; "
                                   f"compiled targets take finite weights")


def compile(model, target="cpu", **options) -> Artifact:  # noqa: A001 - the issue names it so
    """Compile an ONNX model (path or ``ModelProto``) for ``target`` (``"cpu"`` or a Target)."""
    import tvm

    proto = load_onnx(model)
    pinned = validate(proto)
    for k, node in enumerate(proto.graph.node):  # before any target builds: Cortex-M takes its own path
        check_domain(node, k)
    check_finite(proto)
    tgt = get_target(target, **options)
    source = proto.SerializeToString() if isinstance(model, onnx.ModelProto) else Path(model).read_bytes()
    about = source_manifest(proto, source, pinned)
    own = tgt.compile(proto, about)  # Cortex-M: a firmware project
    if own is not None:
        return own
    started = time.perf_counter()
    try:
        mod = to_relax(proto, tgt)
    except LsnnError:
        raise
    except TVM_ERRORS as e:  # TVM's own converters
        raise CompileError(f"cannot import the model into TVM: {type(e).__name__}: {e}") from e
    try:
        with tvm.transform.PassContext(opt_level=tgt.options.get("opt_level", 3)):
            executable = tvm.compile(mod, tgt.tvm_target(), relax_pipeline=tgt.relax_pipeline())
    except TVM_ERRORS as e:  # TVM's errors from C++
        raise CompileError(f"TVM failed to build the model for target '{tgt.name}': "
                           f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}") from e
    manifest = {
        "format": FORMAT,
        "target": tgt.describe(),
        "tvm_version": tvm.__version__,
        **about,
        "compile_seconds": round(time.perf_counter() - started, 3),
        "metadata": {p.key: p.value for p in proto.metadata_props},
    }
    files = tgt.finalize(executable, manifest)
    return Artifact(executable, manifest, executable, files)
