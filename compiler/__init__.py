"""lsnn.compiler: ONNX (with ``ai.lsnn`` ops) to TVM, for any registered target.

``export(module, example_input, path=None, dynamic=True) -> onnx.ModelProto``: a PyTorch
module built from the suite's layers, through ``torch.onnx.export``.
``compile(model, target="cpu", **options) -> Artifact``.
``verify(reference, model, inputs, **options) -> Report``: ``model`` (an ONNX file, a compiled
artifact or a target name) against the PyTorch module ``reference``, per ALIF layer.
"""
from __future__ import annotations


def compile(model, target="cpu", **options):  # noqa: A001
    from .build import compile as _compile

    return _compile(model, target, **options)


def export(module, example_input, path=None, **options):
    from .exporter import export as _export

    return _export(module, example_input, path, **options)


def verify(reference, model, inputs=None, **options):
    from lsnn.targets.verify_module import verify as _verify

    return _verify(reference, model, inputs, **options)


__all__ = ["compile", "export", "verify"]
