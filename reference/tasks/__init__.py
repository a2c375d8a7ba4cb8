"""The tasks of the paper, in one home: ``store-recall``, ``smnist`` and ``l2l-regression``."""
from __future__ import annotations

from dataclasses import fields

from .base import Task, accuracy, decisions, step_loss
from .l2l import L2LRegression, linear_baseline
from .smnist import SMNIST
from .store_recall import StoreRecall
from ..errors import ConfigError
from ..paths import DEFAULT_DATA_DIR

TASKS = {"store-recall": StoreRecall, "smnist": SMNIST, "l2l-regression": L2LRegression}


def task_class(name: str) -> type[Task]:
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}'; choose one of {sorted(TASKS)}")
    return TASKS[name]


def make_task(name: str, data_dir: str | None = None, **params) -> Task:
    """The task ``name`` with ``params`` (a saved ``config()`` may be passed whole); ``data_dir``
    overrides where a task that reads a data set finds it, and is ignored by the others."""
    cls = task_class(name)
    params = {k: v for k, v in params.items() if k != "name"}
    unknown = set(params) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"task '{name}' has no parameter(s) {sorted(unknown)}")
    return cls.from_config(params, data_dir)


def task_from_config(config: dict, data_dir: str | None = None) -> Task:
    """The task a checkpoint was trained on (its saved ``config()``); ``data_dir``, when given,
    replaces where the data set is (for tasks that read one)."""
    params = dict(config)
    saved = params.pop("data_dir", None)
    return make_task(data_dir=data_dir or saved, **params)


__all__ = ["Task", "TASKS", "make_task", "task_class", "task_from_config", "accuracy", "decisions", "step_loss",
           "StoreRecall", "SMNIST", "L2LRegression", "linear_baseline", "DEFAULT_DATA_DIR"]
