"""The held-out metric of a model on a task, as a record that travels with its export.

``lsnn export`` measures the source module on the first held-out examples of
its task and stores the result in the ONNX file's metadata (``lsnn.heldout``);
``lsnn verify`` measures the file under test on the same examples and fails
when the two differ. The examples are fixed by the task's parameters (saved
in ``lsnn.config``: seeds, sizes), their number, the batch size (a task that
draws its examples from a generator draws them batch by batch) and a SHA-256
digest of their inputs and targets, which also pins the data files of smnist.

Two measurements of the same examples agree (:meth:`HeldoutMetric.difference`):

* accuracy: the numbers of correct decisions differ by at most one: a spike
  flipped by rounding near threshold may change one decision, not two;
* mse: the relative difference is at most ``MSE_RTOL`` (1e-3), what the
  compiled targets' per-step rounding (float32, relative 1e-4 before a spike
  flip) leaves after averaging over trials.

Examples measured by default: 64 (256 for smnist), as ``lsnn verify``; on
smnist-lsnn (256 sequences of 840 steps, one thread) that costs about 2.5 s
of the export.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

MSE_RTOL = 1e-3
BATCH_SIZE = 64
KEY = "lsnn.heldout"  # the metadata entry of an ONNX model


def default_examples(task) -> int:
    """How many held-out examples are measured when none is said (verify's default)."""
    return 256 if task.name == "smnist" else 64


@dataclass(frozen=True)
class HeldoutMetric:
    """``total / count`` is the metric: correct decisions / decisions, or summed squared error / trials."""

    metric: str  # "accuracy" or "mse"
    total: float
    count: int
    examples: int  # held-out sequences (episodes)
    batch_size: int
    digest: str  # of the examples' inputs and targets, in example order

    @property
    def value(self) -> float:
        return self.total / max(self.count, 1)

    def to_json(self) -> dict:
        return {**asdict(self), "value": self.value}

    @classmethod
    def from_json(cls, d: dict) -> "HeldoutMetric":
        return cls(d["metric"], float(d["total"]), int(d["count"]), int(d["examples"]), int(d["batch_size"]),
                   str(d["digest"]))

    def describe(self) -> str:
        if self.metric == "accuracy":
            return f"accuracy {self.value:.4f} ({int(self.total)}/{self.count} decisions)"
        return f"mse {self.value:.6g} ({self.count} trials)"

    def same_examples(self, other: "HeldoutMetric") -> str | None:
        """Why ``other`` was not measured on the same examples as this one; None when it was."""
        if other.metric != self.metric:
            return f"the metric is {other.metric}, recorded {self.metric}"
        if other.examples != self.examples:
            return f"{other.examples} held-out examples, recorded on {self.examples}"
        if other.digest != self.digest:
            return "the held-out examples differ from the recorded ones (another data folder or task?)"
        return None

    def difference(self, measured: "HeldoutMetric") -> str | None:
        """What makes ``measured`` (on the same examples) disagree with this one; None when it agrees."""
        if not np.isfinite(measured.total):
            return f"measured {measured.metric} is {measured.value}"
        if self.metric == "accuracy":
            changed = abs(int(round(measured.total)) - int(round(self.total)))
            if changed > 1:
                return f"differs by {changed} correct decisions (at most 1 allowed: one rounding flip)"
            return None
        rel = abs(measured.value - self.value) / max(abs(self.value), 1e-30)
        if rel > MSE_RTOL:
            return f"relative difference {rel:.2e} > {MSE_RTOL:g}"
        return None


class Tally:
    """Accumulates a task's score and the digest of the examples, batch by batch."""

    def __init__(self, task, batch_size: int):
        self.task, self.batch_size = task, batch_size
        self.total, self.count, self.examples = 0.0, 0, 0
        self._sha = hashlib.sha256()

    def add(self, X, target, Y) -> None:
        """One batch: inputs ``[T, B, n_in]``, targets ``[T, B]`` and the readout ``[T, B, O]``."""
        s, n = self.task.score(Y, target)
        self.total += float(s)
        self.count += int(n)
        X, target = np.asarray(X), np.asarray(target)
        self.examples += X.shape[1]
        for a in (X, target):  # example-major, so the digest does not depend on the batching
            self._sha.update(np.ascontiguousarray(np.moveaxis(a, 1, 0)).tobytes())

    def result(self) -> HeldoutMetric:
        return HeldoutMetric(self.task.metric, self.total, self.count, self.examples, self.batch_size,
                             "sha256:" + self._sha.hexdigest())


def measure(module, task, examples: int | None = None, batch_size: int = BATCH_SIZE) -> HeldoutMetric:
    """The held-out metric of a reference module on the first ``examples`` held-out examples."""
    import torch

    examples = default_examples(task) if examples is None else examples
    tally = Tally(task, batch_size)
    with torch.no_grad():
        for X, target in task.heldout(batch_size, examples):
            tally.add(X.numpy(), target.numpy(), module(X).Y.numpy())
    return tally.result()


def record_of(metadata: dict) -> tuple[HeldoutMetric | None, str]:
    """The metric recorded in a model's decoded ``lsnn.*`` metadata, or None and why there is none."""
    entry = metadata.get(KEY)
    if entry is None:
        return None, "the model records no held-out metric (not exported by lsnn export from a checkpoint)"
    if isinstance(entry, dict) and "unavailable" in entry:
        return None, f"no held-out metric was recorded at export: {entry['unavailable']}"
    try:
        return HeldoutMetric.from_json(entry), ""
    except (KeyError, TypeError, ValueError):
        return None, f"the model's {KEY} metadata is not a held-out record: {json.dumps(entry)[:200]}"
