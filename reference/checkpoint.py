"""Checkpoints: a folder with ``checkpoint.pt`` (weights, optimiser, step, RNG)
and ``config.json`` (every hyperparameter, the seed, the command, the commit).
Every file is written to a temporary name and renamed, so a crash never
leaves a half-written checkpoint. ``checkpoint.pt`` is read with
``weights_only=True``: tensors and plain data only, so a file carrying a
pickled object is refused instead of running its code."""
from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import torch

from .errors import LsnnError, MissingFileError
from .files import atomic_write, read_json, write_json
from .modules import build_model

CHECKPOINT = "checkpoint.pt"
CONFIG = "config.json"
METRICS = "metrics.json"


class CheckpointError(LsnnError):
    """A checkpoint folder whose files cannot be read, or are refused."""


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


def _refusal(e: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler refused (its own message also suggests loading the
    file unsafely, which lsnn never does)."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1] if lines else "")


def load(directory: str | Path):
    """``(model, config, state)`` from a checkpoint folder; the model is in eval mode."""
    directory = Path(directory)
    cfg_path, ckpt_path = directory / CONFIG, directory / CHECKPOINT
    for p in (cfg_path, ckpt_path):
        if not p.is_file():
            raise MissingFileError(f"{directory} is not a checkpoint folder: {p.name} is missing")
    config = read_json(cfg_path, CheckpointError, "checkpoint configuration")
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CheckpointError(f"{cfg_path}: no 'model' section (not a checkpoint configuration)")
    model = build_model(**config["model"])
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses objects it would have to execute
        raise CheckpointError(f"{ckpt_path}: refused, the file holds more than tensors and plain data "
                              f"(it would run code when loaded): {_refusal(e)}") from e
    except (RuntimeError, EOFError, OSError) as e:  # a truncated or corrupt zip archive
        raise CheckpointError(f"{ckpt_path}: cannot read the checkpoint ({e})") from e
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{ckpt_path}: no 'model' weights in the checkpoint")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:  # missing or mis-shaped weights
        raise CheckpointError(f"{ckpt_path}: the weights do not fit the model of {cfg_path.name} ({e})") from e
    model.eval()
    return model, config, state
