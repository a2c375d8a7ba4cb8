"""Where the suite's own files live: the committed checkpoints (one folder each under
``models/``) and the default data set of sequential MNIST. Torch-free."""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = ROOT / "models"
DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def committed_models() -> list[str]:
    """Names of the committed checkpoints: the folders under ``models/`` holding a ``config.json``."""
    return sorted(p.name for p in MODELS_DIR.iterdir() if (p / "config.json").is_file())
