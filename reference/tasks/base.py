"""What every task provides, and how a readout is scored against it.

A batch is ``(X, target)``: ``X`` is float32 ``[T, B, n_in]`` (time-major,
as the ops), ``target`` int64 ``[T, B]`` holding the class the readout must
report at each step, or ``-1`` where nothing is asked. Each maximal run of
steps with ``target >= 0`` in one sequence is one *decision*: the prediction
is the arg-max of the readout averaged over that run.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


#: every row of a batch (see :meth:`Task.batch`)
ALL_ROWS = slice(None)


class Task:
    name: str
    n_in: int
    n_out: int
    metric = "accuracy"  # what score() measures; "mse" for regression tasks (lower is better)

    def loss(self, Y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The mean of the loss over its :meth:`loss_terms` terms."""
        return step_loss(Y, target)

    def loss_terms(self, target: torch.Tensor) -> int:
        """How many terms :meth:`loss` averages over (the steps that ask for a class), so that the
        means over several processes' rows combine into the mean over the whole batch."""
        return int((target >= 0).sum())

    def score(self, Y, target) -> tuple[float, int]:
        """(sum, count): the metric is sum / count; correct decisions for classification."""
        return accuracy(Y, target)

    def batch(self, batch_size: int, rng: np.random.Generator, rows: slice = ALL_ROWS
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``rows`` of a training batch of ``batch_size`` sequences drawn from ``rng``. The
        generator advances as for the whole batch, whatever ``rows`` is, so the rows that several
        processes take of one seeded draw make up the batch that one process draws; a task may
        build only the rows asked for (where building is what costs)."""
        raise NotImplementedError

    def heldout(self, batch_size: int, limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def config(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_config(cls, params: dict, data_dir: str | None = None) -> "Task":
        """The task of a saved ``config()`` (without its ``name``); ``data_dir`` matters only to
        tasks that read a data set."""
        return cls(**params)

    def curve(self, Y, target) -> np.ndarray | None:
        """Per-trial squared error summed over the batch, for tasks scored trial by trial within an
        episode (learning to learn); ``None`` for the others."""
        return None

    def curve_metrics(self, curve: np.ndarray, trials: int, limit: int | None) -> dict:
        """The held-out learning curve from the summed :meth:`curve` of ``trials`` scored trials."""
        return {}


def decisions(Y: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions and labels, one per decision window (see module docstring)."""
    Y = torch.as_tensor(Y)
    target = torch.as_tensor(target)
    T, B = target.shape
    valid = target >= 0
    # a window starts where valid begins or the label changes
    prev = torch.cat([torch.full((1, B), -1, dtype=target.dtype), target[:-1]])
    starts = valid & (prev != target)
    # number the windows sequence by sequence: cumulative count in [B, T] order
    window = torch.cumsum(starts.t().reshape(-1).to(torch.int64), 0).reshape(B, T).t() - 1
    ids = window[valid]
    n = int(starts.sum())
    sums = torch.zeros(n, Y.shape[-1], dtype=Y.dtype).index_add_(0, ids, Y[valid])
    labels = torch.full((n,), -1, dtype=target.dtype).scatter_(0, ids, target[valid])
    return sums.argmax(-1), labels


def accuracy(Y: torch.Tensor, target: torch.Tensor) -> tuple[int, int]:
    """``(correct, total)`` decisions."""
    pred, labels = decisions(Y, target)
    return int((pred == labels).sum()), int(labels.numel())


def step_loss(Y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the readout at every step that asks for a class."""
    valid = target >= 0
    return torch.nn.functional.cross_entropy(Y[valid], target[valid])
