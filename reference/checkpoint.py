"""Checkpoints: a folder with ``checkpoint.pt`` (weights, optimiser, step, RNG)
and ``config.json`` (every hyperparameter, the seed, the command, the commit).
Every file is written to a temporary name and renamed, so a crash never
leaves a half-written checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import torch

from .modules import build_model

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.json"


def atomic_write(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: dict) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()))


def read_json(path: Path, error: type[Exception] = ValueError, problem: str = "not valid JSON"):
    """The JSON in ``path``; a broken file raises ``error`` naming the file and the problem."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path}: {problem} ({e})") from e


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save(directory: Path, model, optimizer, step: int, config: dict, extra: dict | None = None) -> None:
    directory = Path(directory)
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict() if optimizer else None,
             "step": step, **(extra or {})}
    atomic_write(directory / CHECKPOINT, lambda f: torch.save(state, f))
    write_json(directory / CONFIG, config)


def load(directory: str | Path):
    """``(model, config, state)`` from a checkpoint folder; the model is in eval mode."""
    directory = Path(directory)
    cfg_path, ckpt_path = directory / CONFIG, directory / CHECKPOINT
    for p in (cfg_path, ckpt_path):
        if not p.is_file():
            raise FileNotFoundError(f"{directory} is not a checkpoint folder: {p.name} is missing")
    config = read_json(cfg_path)
    model = build_model(**config["model"])
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for corrupt files
        raise ValueError(f"{ckpt_path}: cannot read checkpoint ({e})") from e
    model.load_state_dict(state["model"])
    model.eval()
    return model, config, state
