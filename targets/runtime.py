"""What every way of running a model offers: named arrays in, named arrays out."""
from __future__ import annotations

import numpy as np


class Runtime:
    """A loaded model ready to run. ``inputs``/``outputs`` name the graph's tensors."""

    name: str
    inputs: list[str]
    outputs: list[str]

    def run(self, inputs: dict[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        raise NotImplementedError


class OnnxRuntimeBase(Runtime):
    """A runtime that executes an ONNX model: validated against the spec when loaded,
    and its feeds checked (names, dtypes, shapes) once per input signature."""

    def __init__(self, model):
        from lsnn.compiler.onnx.validate import validate

        validate(model)
        self.model = model
        self._checked: set = set()

    def check(self, inputs: dict[str, np.ndarray]) -> None:
        from lsnn.compiler.onnx.validate import check_feeds

        signature = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in inputs.items()))
        if signature not in self._checked:
            check_feeds(self.model, inputs)
            self._checked.add(signature)
