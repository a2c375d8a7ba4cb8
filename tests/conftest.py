"""Fixtures shared by the test files: tiny data, a tiny trained checkpoint, a tiny compiled model."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# store-recall small enough to train and evaluate in a fraction of a second
TINY_STORE_RECALL = {"period_ms": 10, "n_periods": 4, "min_delay_ms": 10, "heldout_size": 8}
TINY_LSNN = {"n_lif": 3, "n_alif": 3}


def write_tiny_mnist(directory, n=12, seed=0):
    """MNIST-format IDX files (``train`` and ``t10k``, ``n`` random images each) in ``directory``."""
    from lsnn.reference.tasks.idx import write_idx

    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        images = rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        write_idx(directory / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{split}-labels-idx1-ubyte", labels)  # raw, mixed with gzip on purpose
    return directory


@pytest.fixture
def tiny_store_recall() -> dict:
    """Task parameters of a store-recall that trains and evaluates in a fraction of a second."""
    return dict(TINY_STORE_RECALL)


@pytest.fixture
def tiny_mnist(tmp_path):
    """A folder of tiny MNIST-format IDX files (12 random images per split)."""
    return write_tiny_mnist(tmp_path / "mnist")


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A store-recall LSNN checkpoint folder trained for one step (fresh for each test: tests may spoil it)."""
    from lsnn.reference.train import train

    out = tmp_path / "ckpt"
    train("store-recall", "lsnn", out, steps=1, batch_size=4, progress=False, model_params=TINY_LSNN,
          task_params=TINY_STORE_RECALL)
    return out


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory):
    """A tiny LSNN (4 inputs, 2 + 2 neurons, 2 outputs) compiled for the CPU and saved: its folder."""
    import torch

    from lsnn.compiler import compile
    from lsnn.compiler.onnx.export import export
    from lsnn.reference import build_model

    torch.manual_seed(0)
    model = build_model("lsnn", n_in=4, n_lif=2, n_alif=2, n_out=2).eval()
    return compile(export(model), "cpu").save(tmp_path_factory.mktemp("artifact") / "tiny-cpu")


@pytest.fixture(scope="session")
def arm_toolchain() -> None:
    """The Cortex-M toolchain and QEMU: tests that need them skip where they are missing, except in
    CI, where a missing tool is a failure."""
    from lsnn.targets.cortex_m import missing_tools

    missing = missing_tools()
    if missing:
        msg = (f"Cortex-M toolchain missing: {', '.join(missing)} "
               "(Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm make)")
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def nvcc() -> None:
    """nvcc compiles the CUDA target (no GPU needed): tests that need it skip where it is missing,
    except in CI, where that is a failure."""
    from lsnn.targets.cuda.nvcc import find_nvcc

    if find_nvcc() is None:
        msg = "nvcc not found (the CUDA toolkit compiles the CUDA target)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="session")
def fashion_mnist() -> str:
    """The default data folder of sMNIST (Debian's dataset-fashion-mnist); its tests skip where it is
    not installed, except in CI, where they must run."""
    from lsnn.reference.paths import DEFAULT_DATA_DIR

    if not Path(DEFAULT_DATA_DIR).is_dir() and os.environ.get("CI") != "true":
        pytest.skip("Fashion-MNIST (dataset-fashion-mnist) is not installed")
    return DEFAULT_DATA_DIR
