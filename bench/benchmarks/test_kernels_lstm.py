"""LSTM-128: the TVM-compiled CPU artifact against onnxruntime on the same exported file, per call
(one batch of 840-step sequences), one thread and all cores, on the sMNIST checkpoint's spike
inputs and on random real-valued inputs of the same shape.

Run: ``.venv/bin/python -m pytest bench/benchmarks/test_kernels_lstm.py --benchmark-columns=median,iqr,rounds``
(not part of the test suite). Uses the committed sMNIST LSTM when present, else a fresh one of
the same size; the task's held-out sequences when Fashion-MNIST is installed, else random spikes
at the task's rate.
"""
from pathlib import Path

import numpy as np
import pytest
import torch

from lsnn.compiler.onnx.export import export
from lsnn.reference import build_model, checkpoint
from lsnn.reference.paths import DEFAULT_DATA_DIR, MODELS_DIR as MODELS
from lsnn.reference.tasks import make_task
from lsnn.targets import open_runtime
from lsnn.targets.cpu.threadpool import size as pool_size

torch.set_num_threads(1)
STEPS, INPUTS = 840, 80


@pytest.fixture(scope="module")
def model():
    if (MODELS / "smnist-lstm" / "checkpoint.pt").is_file():
        net = checkpoint.load(MODELS / "smnist-lstm")[0]
    else:
        torch.manual_seed(0)
        net = build_model("lstm", n_hidden=128).eval()
    return export(net)


def _inputs(kind, batch):
    rng = np.random.default_rng(0)
    if kind == "dense":
        return rng.standard_normal((STEPS, batch, INPUTS)).astype(np.float32)
    if Path(DEFAULT_DATA_DIR).is_dir():
        return next(make_task("smnist").heldout(batch))[0].numpy()
    return (rng.random((STEPS, batch, INPUTS)) < 0.04).astype(np.float32)


@pytest.fixture(scope="module")
def compiled(model):
    from lsnn import compiler

    return {threads: compiler.compile(model, "cpu", threads=threads) for threads in (1, 0)}


@pytest.mark.parametrize("threads", [1, 0], ids=["1-thread", "all-cores"])
@pytest.mark.parametrize("batch", [1, 16, 64])
@pytest.mark.parametrize("inputs", ["smnist", "dense"])
@pytest.mark.parametrize("runtime", ["tvm-cpu", "ort"])
def test_lstm_latency_per_call(benchmark, model, compiled, runtime, inputs, batch, threads):
    X = _inputs(inputs, batch)
    n = pool_size(threads)
    benchmark.group = f"lstm-128 {inputs} batch {batch} threads {n}"
    benchmark.extra_info.update({"threads": n, "steps": STEPS, "batch": batch, "inputs": inputs})
    feeds = {"X": X}
    if runtime == "tvm-cpu":
        art = compiled[threads]
        art.run(feeds)
        benchmark.pedantic(art.run, args=(feeds, ["Y"]), rounds=10 if batch == 1 else 4, warmup_rounds=1)
    else:
        rt = open_runtime(model, "ort", threads=n)
        rt.run(feeds)
        benchmark.pedantic(rt.session.run, args=(["Y"], feeds), rounds=10 if batch == 1 else 4, warmup_rounds=1)
