"""The LSTM baseline's fused training step (lsnn.reference.fused_lstm) against ``nn.LSTM``'s
autograd: the same outputs and final state, the same gradients of every parameter, of the input
and of the initial state (float64: to 1e-12; float32: relative error of each gradient's norm under
1e-5, the rounding of summing in another order), across chunk boundaries, for a truncated sequence
continued from its final state, and the same training run."""
import numpy as np
import pytest
import torch
from lsnn.reference import fused_lstm
from lsnn.reference.modules import LSTMNet


def _lstm(I, H, dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.LSTM(I, H).to(dtype)


def _run(step, lstm, X, state, pieces):
    """Outputs and gradients (4 parameters, X, h0, c0) of a loss reaching every output, over X cut
    into ``pieces`` (each continued from the previous one's final state)."""
    lstm.zero_grad()
    X = X.clone().requires_grad_()
    init = tuple(s.clone().requires_grad_() for s in state)
    g = torch.Generator().manual_seed(5)
    s, loss, outs = init, 0, []
    for part in torch.tensor_split(X, pieces):
        Y, s = step(lstm, part, s)
        outs.append(Y)
        loss = loss + (Y * torch.randn(Y.shape, generator=g, dtype=Y.dtype)).sum()
    loss = loss + (s[0] * 2).sum() + (s[1] * 3).sum()
    loss.backward()
    return [torch.cat(outs).detach(), *(x.detach() for x in s)] + \
        [p.grad.clone() for p in lstm.parameters()] + [X.grad, *(x.grad for x in init)]


def _eager(lstm, X, state):
    return lstm(X, state)


@pytest.mark.parametrize("T, pieces", [(1, 1), (70, 1), (70, 3)])  # 70: across chunks of CHUNK steps
def test_values_and_gradients_match_nn_lstm(T, pieces):
    B, I, H = 5, 7, 6
    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        lstm = _lstm(I, H, dtype)
        g = torch.Generator().manual_seed(1)
        X = torch.randn(T, B, I, generator=g).to(dtype)
        state = (torch.randn(1, B, H, generator=g).to(dtype), torch.randn(1, B, H, generator=g).to(dtype))
        want = _run(_eager, lstm, X, state, pieces)
        got = _run(fused_lstm.lstm, lstm, X, state, pieces)
        names = ["Y", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh", "X", "h0", "c0"]
        for name, a, b in zip(names, want, got):
            assert b.shape == a.shape, name
            rel = float((a - b).norm() / a.norm())
            assert rel < tol, f"{dtype} {name}: relative error {rel:.2e}"


def test_no_initial_state_and_unused_outputs():
    """Zeros as the initial state when none is given; a loss on the readout alone (no gradient for
    the final state)."""
    lstm = _lstm(3, 4, torch.float64)
    X = torch.randn(40, 2, 3, dtype=torch.float64)
    Y, _ = fused_lstm.lstm(lstm, X)
    Y.sum().backward()
    got = [p.grad.clone() for p in lstm.parameters()]
    lstm.zero_grad()
    lstm(X)[0].sum().backward()
    for a, b in zip((p.grad for p in lstm.parameters()), got):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)


def test_denormal_mode_is_restored():
    """The backward flushes subnormals while it runs, and leaves the thread as it found it."""
    tiny = torch.tensor(1e-39)
    lstm = _lstm(2, 3, torch.float32)
    fused_lstm.lstm(lstm, torch.randn(5, 1, 2))[0].sum().backward()
    assert (tiny * 1.0).item() != 0  # still subnormal after the backward
    torch.set_flush_denormal(True)
    try:
        fused_lstm.lstm(lstm, torch.randn(5, 1, 2))[0].sum().backward()
        assert (tiny * 1.0).item() == 0
    finally:
        torch.set_flush_denormal(False)


def test_lstmnet_trains_through_it_and_fused_false_does_not(monkeypatch):
    calls = []
    real = fused_lstm.FusedLSTM.apply
    monkeypatch.setattr(fused_lstm.FusedLSTM, "apply", lambda *a: calls.append(1) or real(*a))
    X = torch.randn(6, 2, 80)
    LSTMNet(n_hidden=8)(X).Y.sum().backward()
    assert calls == [1]
    LSTMNet(n_hidden=8, fused=False)(X).Y.sum().backward()
    with torch.no_grad():
        LSTMNet(n_hidden=8)(X)
    assert calls == [1]


def test_same_training_run_as_nn_lstm():
    """10 Adam steps of an LSTMNet, fused and eager from the same weights: the same loss curve."""
    losses = {}
    for fused in (True, False):
        torch.manual_seed(0)
        net = LSTMNet(n_in=5, n_hidden=16, n_out=3, fused=fused)
        opt = torch.optim.Adam(net.parameters(), lr=0.01)
        rng = np.random.default_rng(0)
        curve = []
        for _ in range(10):
            X = torch.from_numpy(rng.standard_normal((30, 8, 5)).astype(np.float32))
            target = torch.from_numpy(rng.integers(0, 3, 8))
            loss = torch.nn.functional.cross_entropy(net(X).Y[-1], target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            curve.append(loss.item())
        losses[fused] = curve
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)
