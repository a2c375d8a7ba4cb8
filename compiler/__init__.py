"""lsnn.compiler: ONNX (with ``ai.lsnn`` ops) to TVM, for any registered target.

``compile(model, target="cpu", **options) -> Artifact``.
"""
from __future__ import annotations


def compile(model, target="cpu", **options):  # noqa: A001
    from .build import compile as _compile

    return _compile(model, target, **options)


__all__ = ["compile"]
