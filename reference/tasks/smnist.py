"""Sequential image classification, as the paper's sequential MNIST.

A 28x28 image is shown pixel by pixel (784 steps), then a cue period of
``cue_steps`` asks for the class. Gray levels become spikes by threshold
crossing (as in the authors' code): with ``L = (n_in - 1) // 2`` thresholds
evenly spaced in ``(0, 255)``, channel ``k`` fires when the gray level rises
across threshold ``k`` from one pixel to the next (onset) and channel
``L + k`` when it falls across it (offset). The remaining channels (one or
two) fire at every step of the cue period. The readout must give the label
during the whole cue period.

Data: MNIST-format IDX files (``train-*`` for training, ``t10k-*`` held out),
by default Fashion-MNIST from Debian's ``dataset-fashion-mnist``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import ALL_ROWS, Task
from .idx import find_split
from ..errors import ConfigError, MissingFileError
from ..paths import DEFAULT_DATA_DIR


def encode(images: np.ndarray, n_in: int = 80, cue_steps: int = 56) -> np.ndarray:
    """Spike trains ``[784 + cue_steps, N, n_in]`` (float32) for uint8 images ``[N, 28, 28]``."""
    n_levels = (n_in - 1) // 2
    if n_levels < 1:
        raise ConfigError(f"smnist needs n_in >= 3 input channels, got {n_in}")
    thresholds = np.linspace(0, 255, n_levels + 2)[1:-1]
    x = images.reshape(len(images), -1).astype(np.float32)  # [N, 784]
    above = x[:, :, None] >= thresholds  # [N, 784, L]
    prev = np.concatenate([np.zeros_like(above[:, :1]), above[:, :-1]], axis=1)
    onset, offset = above & ~prev, prev & ~above
    N, P = x.shape
    out = np.zeros((P + cue_steps, N, n_in), np.float32)
    out[:P, :, :n_levels] = onset.transpose(1, 0, 2)
    out[:P, :, n_levels:2 * n_levels] = offset.transpose(1, 0, 2)
    out[P:, :, 2 * n_levels:] = 1.0
    return out


@dataclass
class SMNIST(Task):
    data_dir: str = DEFAULT_DATA_DIR
    n_in: int = 80
    cue_steps: int = 56
    n_out: int = 10

    name = "smnist"

    def __post_init__(self):
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_config(cls, params: dict, data_dir: str | None = None) -> "SMNIST":
        return cls(**{**params, **({"data_dir": str(data_dir)} if data_dir else {})})

    def _split(self, split: str):
        if split not in self._cache:
            if not Path(self.data_dir).is_dir():
                raise MissingFileError(
                    f"data directory {self.data_dir} does not exist: install the Debian package "
                    f"dataset-fashion-mnist or pass --data-dir with MNIST-format IDX files")
            self._cache[split] = find_split(self.data_dir, split)
        return self._cache[split]

    @property
    def T(self) -> int:
        return 28 * 28 + self.cue_steps

    def config(self) -> dict:
        return {"name": self.name, "data_dir": str(self.data_dir), "n_in": self.n_in, "cue_steps": self.cue_steps}

    def _make(self, images: np.ndarray, labels: np.ndarray):
        X = encode(images, self.n_in, self.cue_steps)
        target = np.full((self.T, len(labels)), -1, np.int64)
        target[-self.cue_steps:] = labels.astype(np.int64)
        return torch.from_numpy(X), torch.from_numpy(target)

    def batch(self, batch_size: int, rng: np.random.Generator, rows: slice = ALL_ROWS):
        images, labels = self._split("train")
        idx = rng.integers(0, len(labels), size=batch_size)[rows]  # encoding is the cost: only these
        return self._make(images[idx], labels[idx])

    def heldout(self, batch_size: int, limit: int | None = None):
        images, labels = self._split("t10k")
        n = len(labels) if limit is None else min(limit, len(labels))
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            yield self._make(images[start:stop], labels[start:stop])
