"""lsnn.targets: where a model runs. ``ort`` (stock onnxruntime) and ``torch`` (the
reference) run ONNX files; compiled targets (CPU, CUDA, Cortex-M) come with the compiler."""
from __future__ import annotations

from pathlib import Path

from .runtime import Runtime

RUNTIMES = ("ort", "torch")


def open_runtime(model, runtime: str = "ort", threads: int = 1, probes: list[str] | None = None) -> Runtime:
    """Load an ONNX model (path or ``ModelProto``) into a runtime."""
    from lsnn.compiler.onnx.validate import load

    proto = load(model)
    if runtime == "ort":
        from .ort_runtime import OrtRuntime

        return OrtRuntime(proto, threads, probes)
    if runtime == "torch":
        from .torch_runtime import TorchRuntime

        return TorchRuntime(proto, threads, probes)
    raise ValueError(f"unknown runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")


__all__ = ["Runtime", "RUNTIMES", "open_runtime"]
