"""``compile(model, target)``: ONNX file or proto in, runnable :class:`Artifact` out."""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import onnx

from lsnn.compiler.onnx.validate import load as load_onnx, validate
from lsnn.targets.artifact import FORMAT, Artifact
from lsnn.targets.base import get_target

from .importer import CompileError, to_relax


def _io(values) -> list[dict]:
    from onnx import helper

    out = []
    for vi in values:
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim] \
            if t.HasField("shape") else None
        out.append({"name": vi.name, "shape": shape, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name})
    return out


def compile(model, target="cpu", **options) -> Artifact:  # noqa: A001 - the issue names it so
    """Compile an ONNX model (path or ``ModelProto``) for ``target`` (``"cpu"`` or a Target)."""
    import tvm

    proto = load_onnx(model)
    validate(proto)
    tgt = get_target(target, **options)
    source = proto.SerializeToString() if isinstance(model, onnx.ModelProto) else Path(model).read_bytes()
    own = tgt.compile(proto, hashlib.sha256(source).hexdigest())  # Cortex-M: a firmware project
    if own is not None:
        return own
    started = time.perf_counter()
    try:
        mod = to_relax(proto, tgt)
    except CompileError:
        raise
    except Exception as e:  # TVM's own converters raise many kinds
        raise CompileError(f"cannot import the model into TVM: {type(e).__name__}: {e}") from e
    try:
        with tvm.transform.PassContext(opt_level=tgt.options.get("opt_level", 3)):
            executable = tvm.compile(mod, tgt.tvm_target(), relax_pipeline=tgt.relax_pipeline())
    except Exception as e:  # TVM raises its own error types from C++
        raise CompileError(f"TVM failed to build the model for target '{tgt.name}': "
                           f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else e}") from e
    inits = {i.name for i in proto.graph.initializer}
    manifest = {
        "format": FORMAT,
        "target": tgt.describe(),
        "tvm_version": tvm.__version__,
        "source_sha256": hashlib.sha256(source).hexdigest(),
        "inputs": _io([vi for vi in proto.graph.input if vi.name not in inits]),
        "outputs": _io(proto.graph.output),
        "compile_seconds": round(time.perf_counter() - started, 3),
        "metadata": {p.key: p.value for p in proto.metadata_props},
    }
    files = tgt.finalize(executable, manifest)
    return Artifact(executable, manifest, executable, files)
