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
