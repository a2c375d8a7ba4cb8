"""Variants of the test models that the CPU and CUDA tests share (no test file imports another)."""
from __future__ import annotations

import numpy as np


def spikes(T, B, I, p=0.2, seed=1):
    return (np.random.default_rng(seed).random((T, B, I)) < p).astype(np.float32)


def non_finite_feeds(art, T=30, B=4):
    """Spikes with a NaN, +Inf and -Inf in X, and a NaN in every initial state."""
    X = spikes(T, B, art.manifest["inputs"][0]["shape"][2])
    X[3, 0, 2], X[4, 1 % B, 1], X[6, 2 % B, 0] = np.nan, np.inf, -np.inf
    feeds = {"X": X}
    for spec in art.manifest["inputs"][1:]:
        state = np.zeros([d if isinstance(d, int) else B for d in spec["shape"]], np.float32)
        state.reshape(-1)[-1] = np.nan
        feeds[spec["name"]] = state
    return feeds


def static_shape(model, T, B):
    """``model`` with fixed T and B, as ``torch.onnx.export`` writes by default."""
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        for d, n in zip(dims, (T, B)):
            d.Clear()
            d.dim_value = n
    return model
