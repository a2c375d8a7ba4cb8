"""Store-recall, the working-memory task of Bellec et al. (2018).

Time is cut into periods of ``period_ms``. In every period but the recall
periods (with ``distractors``; else only in the store period), one of
``n_values`` values is shown on its group of input channels.
A store cue (its own channel group) marks the period whose value must be
remembered; a recall cue, at least ``min_delay_ms`` after the end of the
store period, asks the network to report it: the readout must give that
value during the whole recall period. Groups fire Poisson spikes at
``rate_hz`` when active and are silent otherwise.

Channels: ``[value 0 | value 1 | ... | store | recall]``, ``n_per_group``
channels each. At ``dt = 1 ms`` and ``min_delay_ms = 1000`` the memory must
last fifty membrane time constants, which only threshold adaptation can do.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .base import ALL_ROWS, Task
from ..errors import ConfigError


@dataclass
class StoreRecall(Task):
    n_values: int = 2
    n_per_group: int = 10
    period_ms: int = 100
    n_periods: int = 14
    min_delay_ms: int = 1000
    rate_hz: float = 50.0
    dt: float = 1.0
    distractors: bool = False  # show a random value in every other period too
    heldout_seed: int = 2018
    heldout_size: int = 512

    name = "store-recall"

    def __post_init__(self):
        self.steps_per_period = int(round(self.period_ms / self.dt))
        self.min_gap = int(np.ceil(self.min_delay_ms / self.period_ms)) + 1  # recall - store, in periods
        if self.min_gap >= self.n_periods:
            raise ConfigError(f"store-recall: {self.n_periods} periods of {self.period_ms} ms cannot hold "
                             f"a delay of {self.min_delay_ms} ms between store and recall")

    @property
    def n_in(self) -> int:
        return (self.n_values + 2) * self.n_per_group

    @property
    def n_out(self) -> int:
        return self.n_values

    @property
    def T(self) -> int:
        return self.n_periods * self.steps_per_period

    def config(self) -> dict:
        return {"name": self.name, **asdict(self)}

    def batch(self, batch_size: int, rng: np.random.Generator, rows: slice = ALL_ROWS):
        B, P, S, G = batch_size, self.n_periods, self.steps_per_period, self.n_per_group
        store = rng.integers(0, P - self.min_gap, size=B)
        recall = store + self.min_gap + (rng.random(B) * (P - self.min_gap - store)).astype(int)
        values = rng.integers(0, self.n_values, size=(B, P))
        groups = np.zeros((P, B, self.n_values + 2), bool)  # active group per period
        b = np.arange(B)
        groups[:, :, :self.n_values] = np.eye(self.n_values, dtype=bool)[values].transpose(1, 0, 2)
        groups[recall, b, :self.n_values] = False
        if not self.distractors:
            groups[:, :, :self.n_values] &= (np.arange(P)[:, None] == store)[:, :, None]
        groups[store, b, self.n_values] = True
        groups[recall, b, self.n_values + 1] = True
        active = np.repeat(np.repeat(groups, G, axis=2), S, axis=0)  # [T, B, n_in]
        p = self.rate_hz * self.dt / 1000.0
        X = (active & (rng.random(active.shape) < p)).astype(np.float32)
        target = np.full((P, B), -1, np.int64)
        target[recall, b] = values[b, store]
        return torch.from_numpy(X[:, rows]), torch.from_numpy(np.repeat(target[:, rows], S, axis=0))

    def heldout(self, batch_size: int, limit: int | None = None):
        n = self.heldout_size if limit is None else min(limit, self.heldout_size)
        rng = np.random.default_rng(self.heldout_seed)
        for start in range(0, n, batch_size):
            yield self.batch(min(batch_size, n - start), rng)
