"""The tasks of the paper, in one home: ``store-recall``, ``smnist`` and ``l2l-regression``."""
from __future__ import annotations

from .base import Task, accuracy, decisions, step_loss
from .l2l import L2LRegression, linear_baseline
from .smnist import SMNIST, DEFAULT_DATA_DIR
from .store_recall import StoreRecall
from ..errors import ConfigError

TASKS = {"store-recall": StoreRecall, "smnist": SMNIST, "l2l-regression": L2LRegression}


def make_task(name: str, **params) -> Task:
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'; choose one of {sorted(TASKS)}")
    params = {k: v for k, v in params.items() if k != "name"}
    return TASKS[name](**params)


__all__ = ["Task", "TASKS", "make_task", "accuracy", "decisions", "step_loss",
           "StoreRecall", "SMNIST", "L2LRegression", "linear_baseline", "DEFAULT_DATA_DIR"]
