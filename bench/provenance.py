"""Where a bench run came from: the suite's version, the git commit of the tree it ran from, and the
training budget of each checkpoint (read from its ``metrics.json``, never guessed). Recorded in
``results.json`` so a report, or a later comparison, names them."""
from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path

from lsnn.reference.paths import ROOT

#: the training budget a checkpoint's metrics.json records (older checkpoints may lack some)
BUDGET_KEYS = ("steps", "batch_size", "samples_seen", "train_seconds", "processes", "threads")


def suite_version() -> str | None:
    try:
        return importlib.metadata.version("lsnn")
    except importlib.metadata.PackageNotFoundError:
        return None


def git_commit(root: Path = ROOT) -> str | None:
    """The commit of the source tree (with ``-dirty`` when tracked files differ), or None outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip()
    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance() -> dict:
    return {"lsnn": suite_version(), "git_commit": git_commit()}


def training_budget(checkpoint: Path) -> dict:
    """The budget fields of ``checkpoint/metrics.json`` that are there (none if the file is missing)."""
    try:
        metrics = json.loads((Path(checkpoint) / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: metrics[k] for k in BUDGET_KEYS if k in metrics}
