"""lsnn.targets: where a model runs. ``ort`` (stock onnxruntime) and ``torch`` (the
reference) run ONNX files; compiled targets (CPU, CUDA, Cortex-M) come with the compiler."""
from __future__ import annotations

from .runtime import Runtime

RUNTIMES = ("ort", "torch")


def open_runtime(model, runtime: str = "ort", threads: int = 1) -> Runtime:
    """Load an ONNX model (path or ``ModelProto``) into a runtime."""
    from lsnn.compiler.onnx.validate import load

    proto = load(model)
    if runtime == "ort":
        from .ort_runtime import OrtRuntime

        return OrtRuntime(proto, threads)
    if runtime == "torch":
        from .torch_runtime import TorchRuntime

        return TorchRuntime(proto, threads)
    from .base import TargetError, available, get_target

    if runtime in available():  # a compile target: compile now
        from lsnn.compiler import compile

        return compile(proto, get_target(runtime))
    raise TargetError(f"unknown runtime '{runtime}'; choose one of {', '.join(RUNTIMES + tuple(available()))}")


def load(directory):
    """A saved compiled artifact, ready to run (no recompilation)."""
    from . import cortex_m, cpu, cuda  # noqa: F401  (registers the targets)
    from .artifact import load as _load

    return _load(directory)


__all__ = ["Runtime", "RUNTIMES", "open_runtime", "load"]
