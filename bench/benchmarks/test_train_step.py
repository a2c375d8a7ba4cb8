"""Time of one Adam training step of the default sMNIST LSNN (batch 64 of the task's 840-step
Fashion-MNIST sequences, readout, loss and firing-rate regulariser as in ``Trainer.step``), on one
thread: through the fused kernels (``lsnn.reference.fused``, the default) and through the eager
reference (``fused=False``), side by side; and the same for the LSTM-128 baseline
(``lsnn.reference.fused_lstm`` against ``nn.LSTM``'s own backward) and the GRU-128 baseline
(``nn.GRU``'s own backward).

Run: ``.venv/bin/python -m pytest bench/benchmarks/test_train_step.py
--benchmark-columns=median,iqr,rounds`` (not part of the test suite).
"""
import numpy as np
import pytest
import torch

from lsnn.reference.modules import LSNN, GRUNet, LSTMNet
from lsnn.reference.regularizers import firing_rate_loss
from lsnn.reference.tasks.smnist import SMNIST


@pytest.fixture(scope="module")
def batch():
    torch.set_num_threads(1)
    task = SMNIST()
    X, target = task.batch(64, np.random.default_rng(0))
    return task, X, target


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_train_step(benchmark, batch, fused):
    task, X, target = batch
    torch.manual_seed(0)
    model = LSNN(n_in=task.n_in, n_out=task.n_out)
    model.alif.fused = model.readout.fused = fused
    loss = benchmark.pedantic(_step(task, model, X, target), rounds=5, warmup_rounds=1)
    assert np.isfinite(loss)


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
def test_lstm_train_step(benchmark, batch, fused):
    task, X, target = batch
    torch.manual_seed(0)
    model = LSTMNet(n_in=task.n_in, n_out=task.n_out, n_hidden=128, fused=fused)
    loss = benchmark.pedantic(_step(task, model, X, target), rounds=5, warmup_rounds=1)
    assert np.isfinite(loss)


def test_gru_train_step(benchmark, batch):
    task, X, target = batch
    torch.manual_seed(0)
    model = GRUNet(n_in=task.n_in, n_out=task.n_out, n_hidden=128)
    loss = benchmark.pedantic(_step(task, model, X, target), rounds=5, warmup_rounds=1)
    assert np.isfinite(loss)


def _step(task, model, X, target):
    """One ``Trainer.step``: loss (with the firing-rate regulariser of a spiking model), backward,
    clipping, Adam."""
    opt = torch.optim.Adam(model.parameters(), lr=0.005)

    def step():
        out = model(X)
        loss = task.loss(out.Y, target)
        if out.Z is not None:
            loss = loss + firing_rate_loss(out.Z, 10.0, model.config.dt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    return step
