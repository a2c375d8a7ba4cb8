"""lsnn.compiler: ONNX (with ``ai.lsnn`` ops) to TVM, for any registered target.

``export(module, example_input, path=None, dynamic=True) -> onnx.ModelProto``: a PyTorch
module built from the suite's layers, through ``torch.onnx.export``.
``compile(model, target="cpu", **options) -> Artifact``.
"""
from __future__ import annotations


def compile(model, target="cpu", **options):  # noqa: A001
    from .build import compile as _compile

    return _compile(model, target, **options)


def export(module, example_input, path=None, **options):
    from .exporter import export as _export

    return _export(module, example_input, path, **options)


__all__ = ["compile", "export"]
