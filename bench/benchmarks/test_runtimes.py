"""Latency per call (one batch of 840-step sequences) of the runtimes, one thread each, side by side:
the TVM-compiled CPU artifact, onnxruntime on the same exported file, and the
PyTorch reference in eager mode.

Run: ``.venv/bin/python -m pytest bench/benchmarks --benchmark-columns=median,iqr,rounds``
(not part of the test suite). Uses the committed sMNIST checkpoints when present
(their trained firing rates), else fresh models of the same size, on 840-step
sequences of the task's encoding.
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
torch.set_num_threads(1)


def _model(name, kind, **params):
    if (MODELS / name / "checkpoint.pt").is_file():
        return checkpoint.load(MODELS / name)[0]
    torch.manual_seed(0)
    return build_model(kind, **params).eval()


def _inputs(batch):
    if Path(DEFAULT_DATA_DIR).is_dir():
        X, _ = next(make_task("smnist").heldout(batch))
        return X.numpy()
    rng = np.random.default_rng(0)
    return (rng.random((840, batch, 80)) < 0.02).astype(np.float32)


@pytest.fixture(scope="module")
def nets():
    return {"lsnn": _model("smnist-lsnn", "lsnn"), "lstm": _model("smnist-lstm", "lstm", n_hidden=128)}


@pytest.fixture(scope="module")
def compiled(nets):
    from lsnn import compiler

    out = {k: compiler.compile(export(net), "cpu") for k, net in nets.items()}
    out["lsnn-dense"] = compiler.compile(export(nets["lsnn"]), "cpu", events=False)
    return out


@pytest.mark.parametrize("batch", [1, 64])
@pytest.mark.parametrize("kind", ["lsnn", "lstm"])
@pytest.mark.parametrize("runtime", ["tvm-cpu", "tvm-cpu-dense", "ort", "torch-eager"])
def test_latency_per_call(benchmark, nets, compiled, kind, runtime, batch):
    net = nets[kind]
    X = _inputs(batch)
    benchmark.group = f"{kind} smnist batch {batch}"
    benchmark.extra_info.update({"threads": 1, "steps": X.shape[0], "batch": batch})
    if runtime == "tvm-cpu-dense" and kind != "lsnn":
        pytest.skip("the dense/event-driven choice is the ALIF kernel's")
    if runtime.startswith("tvm-cpu"):
        art = compiled[kind + ("-dense" if runtime.endswith("dense") else "")]
        feeds = {"X": X}
        art.run(feeds)
        benchmark.pedantic(art.run, args=(feeds, ["Y"]), rounds=20 if batch == 1 else 5, warmup_rounds=2)
    elif runtime == "ort":
        rt = open_runtime(export(net), "ort", threads=1)
        feeds = {"X": X}
        rt.run(feeds)
        benchmark.pedantic(rt.session.run, args=(["Y"], feeds), rounds=5 if batch == 1 else 3, warmup_rounds=1)
    else:
        Xt = torch.from_numpy(X)

        def call():
            with torch.no_grad():
                return net(Xt).Y

        benchmark.pedantic(call, rounds=5 if batch == 1 else 3, warmup_rounds=1)


@pytest.mark.parametrize("kind", ["lsnn", "lstm"])
def test_compile_time(benchmark, nets, kind):
    """Wall time of ``lsnn.compiler.compile`` for the sMNIST-size model (target: under 20 s for the LSNN)."""
    from lsnn import compiler

    model = export(nets[kind])
    benchmark.group = "compile (cpu)"
    benchmark.pedantic(compiler.compile, args=(model, "cpu"), rounds=2, warmup_rounds=0)
