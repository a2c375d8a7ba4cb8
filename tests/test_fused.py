"""The fused ALIF and LI kernels (lsnn.reference.fused) against the eager reference: the same
forward values bit for bit, the same gradients of every parameter, of the input and of the initial
state (float32: relative error of each gradient's norm under 1e-5; measured ~1e-7, the rounding
of summing the same terms in another order), the same training run, and the fallback."""
import warnings

import numpy as np
import pytest
import torch
from lsnn.reference import fused
from lsnn.reference.errors import ConfigError
from lsnn.reference.functional import ALIFState
from lsnn.reference.layers import ALIF, LI
from lsnn.reference.modules import LSNN
from lsnn.reference.regularizers import firing_rate_loss, firing_rates

RTOL = 1e-5


@pytest.fixture(autouse=True)
def _built():
    if fused.build() is None:
        pytest.fail("the fused kernel did not build here (setup.sh builds it)")


def _twins(layer_cls, *args, **kwargs):
    torch.manual_seed(0)
    a = layer_cls(*args, **kwargs, fused=False)
    b = layer_cls(*args, **kwargs, fused=True)
    b.load_state_dict(a.state_dict())
    return a, b


def _inputs(T, B, I, dense=False, seed=1):
    g = torch.Generator().manual_seed(seed)
    if dense:
        return torch.randn(T, B, I, generator=g) * 0.5
    return (torch.rand(T, B, I, generator=g) < 0.15).float()


def _state(B, H, seed=2):
    g = torch.Generator().manual_seed(seed)
    return ALIFState(torch.randn(B, H, generator=g) * 0.01, torch.rand(B, H, generator=g) * 0.02,
                     (torch.rand(B, H, generator=g) < 0.3).float(), torch.randint(0, 3, (B, H), generator=g).float())


def _loss(out, T):
    """Reaches every output: spikes weighted by time, V, A and the final v, a, z."""
    w = torch.linspace(0.1, 1, T)[:, None, None]
    f = out.final_state
    return (out.Z * w).sum() + (out.V ** 2 * w).sum() + (out.A * w).sum() + (f.v * 2).sum() + (f.a * 3).sum() \
        + f.z.sum()


def _grads(layer, X, state, chunks=(None,)):
    """Outputs and gradients (W, R_raw, X, initial v, a, z) of _loss over X, run in pieces
    (a truncated sequence continued from its final state) where ``chunks`` splits it."""
    X = X.clone().requires_grad_()
    init = None if state is None else ALIFState(*(s.clone().requires_grad_(i < 3) for i, s in enumerate(state)))
    outs, s, start, loss = [], init, 0, 0
    for stop in (*[c for c in chunks if c is not None], X.shape[0]):
        out = layer.sequence(X[start:stop], s)
        loss = loss + _loss(out, stop - start)
        outs.append(out)
        s, start = out.final_state, stop
    wrt = [layer.W, layer.R_raw, X] + ([] if init is None else list(init[:3]))
    return outs, torch.autograd.grad(loss, wrt)


def _assert_same(eager, fast):
    (outs_e, g_e), (outs_f, g_f) = eager, fast
    for oe, of in zip(outs_e, outs_f):
        assert oe.Z.sum() > 0, "no spikes: the case tests nothing"
        for name in ("Z", "V", "A"):
            assert torch.equal(getattr(oe, name), getattr(of, name)), name
        for name, se, sf in zip("vazr", oe.final_state, of.final_state):
            assert torch.equal(se, sf), f"final {name}"
    for name, ge, gf in zip(("W", "R_raw", "X", "v0", "a0", "z0"), g_e, g_f):
        err = ((ge - gf).norm() / ge.norm()).item()
        assert err < RTOL, f"gradient of {name}: relative error {err:.2e}"


CASES = {  # id: (n_lif, n_alif, n_refractory, T, initial state, dense inputs, chunks)
    "lsnn-refractory": (6, 6, 3, 60, True, False, (None,)),
    "lsnn-no-refractory": (6, 6, 0, 60, True, False, (None,)),
    "zero-state": (6, 6, 2, 60, False, False, (None,)),
    "lif-only": (12, 0, 2, 60, True, False, (None,)),
    "alif-only": (0, 12, 2, 60, True, False, (None,)),
    "T=1": (6, 6, 2, 1, True, False, (None,)),
    "dense-inputs": (6, 6, 2, 40, True, True, (None,)),
    "truncated": (6, 6, 3, 60, True, False, (25,)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_alif_matches_eager(case):
    n_lif, n_alif, n_ref, T, with_state, dense, chunks = CASES[case]
    B, I = 4, 10
    eager, fast = _twins(ALIF, I, n_lif, n_alif, n_refractory=n_ref)
    X = _inputs(T, B, I, dense) * (3.0 if not dense else 1.0)
    state = _state(B, eager.n_hidden) if with_state else None
    if T == 1:  # one step must spike from the state alone
        state = state._replace(v=state.v + 0.5 * torch.rand(B, eager.n_hidden))
    _assert_same(_grads(eager, X, state, chunks), _grads(fast, X, state, chunks))


@pytest.mark.parametrize("dense_above", [0.4, 0.0, 1.0], ids=["default", "matmul", "dots"])
def test_rate_regulariser_gradients_match_eager(monkeypatch, dense_above):
    """The firing-rate loss through the mean the fused call outputs (its gradient added per step in
    the kernel), with a layer wide enough for the vectorised dot products of gI R and their tails
    (45 = 16 + 16 + 13 neurons), gI R summed as dot products or matmul at every step or as chosen
    by default (20-30% of the spikes reach the loss here)."""
    monkeypatch.setattr(fused, "DENSE_SPIKE_GRAD", dense_above)
    eager, fast = _twins(ALIF, 10, 20, 25, n_refractory=2)
    X = _inputs(80, 4, 10) * 3.0
    state = _state(4, 45)
    res = []
    for layer in (eager, fast):
        x = X.clone().requires_grad_()
        out = layer.sequence(x, state)
        assert (fused.spike_rates(out.Z) is not None) == layer.fused
        loss = 50 * firing_rate_loss(out.Z) + (out.Z * torch.linspace(0, 1, 80)[:, None, None]).sum()
        res.append((out, torch.autograd.grad(loss, [layer.W, layer.R_raw, x])))
    (oe, ge), (of, gf) = res
    assert oe.Z.sum() > 0 and torch.equal(oe.Z, of.Z)
    assert torch.equal(firing_rates(oe.Z), firing_rates(of.Z))
    for name, a, b in zip(("W", "R_raw", "X"), ge, gf):
        err = ((a - b).norm() / a.norm()).item()
        assert err < RTOL, f"gradient of {name}: relative error {err:.2e}"


def test_firing_rates_is_the_mean_with_its_gradient():
    """firing_rates: Z.mean(dim=(0, 1)) and its gradient bit for bit, for any Z; spikes of a fused
    call changed in place no longer take the mean the call computed."""
    Z = (torch.rand(30, 5, 7) < 0.1).float().requires_grad_()
    c = torch.randn(7)
    g_mean, = torch.autograd.grad((Z.mean(dim=(0, 1)) * c).sum(), Z)
    g_rates, = torch.autograd.grad((firing_rates(Z) * c).sum(), Z)
    assert torch.equal(firing_rates(Z), Z.mean(dim=(0, 1))) and torch.equal(g_rates, g_mean)
    out = ALIF(4, 3, 3).sequence((torch.rand(20, 2, 4) < 0.3).float())
    assert fused.spike_rates(out.Z) is not None
    with torch.no_grad():
        out.Z.mul_(2)
    assert fused.spike_rates(out.Z) is None
    torch.testing.assert_close(firing_rates(out.Z), out.Z.mean(dim=(0, 1)), rtol=0, atol=0)


def test_li_matches_eager():
    eager, fast = _twins(LI, 12, 3)
    X = _inputs(50, 4, 12)
    y0 = torch.randn(4, 3)
    res = []
    for layer in (eager, fast):
        x, y = X.clone().requires_grad_(), y0.clone().requires_grad_()
        Y, final = layer.sequence(x, y)
        loss = (Y * torch.linspace(0, 1, 50)[:, None, None]).sum() + (final ** 2).sum()
        res.append((Y, final, torch.autograd.grad(loss, [layer.W, layer.bias, x, y])))
    (Ye, fe, ge), (Yf, ff, gf) = res
    assert torch.equal(Ye, Yf) and torch.equal(fe, ff)
    for a, b in zip(ge, gf):
        assert ((a - b).norm() / a.norm()).item() < RTOL


def _train(fused_layers: bool, steps: int = 20):
    torch.manual_seed(0)
    model = LSNN(n_in=8, n_lif=10, n_alif=10, n_out=3)
    model.alif.fused = model.readout.fused = fused_layers
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)  # one batch, learnt by heart
    X = torch.from_numpy((rng.random((40, 8, 8)) < 0.2).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 3, 8))
    losses = []
    for _ in range(steps):
        out = model(X)
        loss = torch.nn.functional.cross_entropy(out.Y[-10:].mean(0), target) + (out.Z.mean() - 0.05) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses), model


def test_training_run_matches_eager():
    eager, m_e = _train(False)
    fast, m_f = _train(True)
    assert eager[-1] < eager[0]
    np.testing.assert_allclose(fast, eager, rtol=1e-5)
    # Adam scales each gradient element to a step of about lr whatever its size, so an element whose
    # gradient is near zero (where rounding differs most, relatively) may move by rounding x lr
    for (name, a), b in zip(m_e.state_dict().items(), m_f.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


def test_failed_build_warns_once_and_trains_eager(monkeypatch):
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension 'lsnn_alif_bptt': c++: not found")

    monkeypatch.setattr(fused, "_kernel", None)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        losses, _ = _train(True, steps=3)
    assert [w.category for w in caught] == [fused.FusedKernelWarning]
    assert "c++: not found" in str(caught[0].message)
    eager, _ = _train(False, steps=3)
    np.testing.assert_array_equal(losses, eager)


def test_constant_buffers_with_gradients_are_refused():
    layer = ALIF(4, 2, 2)
    layer.alpha.requires_grad_()
    with pytest.raises(ConfigError, match="alpha.*fused=False"):
        layer(torch.zeros(3, 2, 4))


def test_fused_flag_is_not_in_the_configuration_or_checkpoint():
    a, b = ALIF(4, 2, 2, fused=False), ALIF(4, 2, 2)
    assert a.config == b.config and b.fused and not a.fused
    assert set(a.state_dict()) == set(b.state_dict())
