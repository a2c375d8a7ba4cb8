"""The reference operators against values derived by hand from shared/spec/ops.md."""
import numpy as np
import pytest
import torch

from lsnn.reference import ALIFState, SpecError, alif, li

# Two neurons, one input. Neuron 1 is adaptive (beta = 1) and receives a
# synapse of weight 2 from neuron 0. alpha = rho = 0.5, thr = 0.1,
# one refractory step. Derivation, state (v, a, z, r) starting at 0:
# t0 X=1: a=0, A=[.1,.1], I=[1,.5], v=[.5,.25] -> both spike, r=[1,1]
# t1 X=1: a=[.5,.5], A=[.1,.6], I=[1,2.5], v=.5v+.5I-A*z=[.65,.775]
#         above threshold but refractory -> no spike, r=[0,0]
# t2 X=1: a=[.25,.25], A=[.1,.35], I=[1,.5], v=[.825,.6375] -> both spike
# t3 X=0: a=[.625,.625], A=[.1,.725], I=[0,2], v=[.3125,.59375] -> refractory
# t4 X=0: a=[.3125,.3125], A=[.1,.4125], I=[0,0], v=[.15625,.296875]
#         neuron 0 spikes; neuron 1 would with its baseline threshold .1,
#         but its adapted threshold .4125 stops it.
W = [[1.0], [0.5]]
R = [[0.0, 0.0], [2.0, 0.0]]
X = [1.0, 1.0, 1.0, 0.0, 0.0]
Z_HAND = [[1, 1], [0, 0], [1, 1], [0, 0], [1, 0]]
V_HAND = [[0.5, 0.25], [0.65, 0.775], [0.825, 0.6375], [0.3125, 0.59375], [0.15625, 0.296875]]
A_HAND = [[0.1, 0.1], [0.1, 0.6], [0.1, 0.35], [0.1, 0.725], [0.1, 0.4125]]


def f32(x):
    return torch.tensor(x, dtype=torch.float32)


def hand_layer(n_refractory=1, X=X):
    return alif(f32(X).reshape(-1, 1, 1), f32(W), f32(R), f32([0.0, 1.0]), f32([0.5, 0.5]), f32([0.5, 0.5]),
                thr=0.1, n_refractory=n_refractory)


def test_alif_matches_hand_derivation():
    Z, V, A, final = hand_layer()
    assert Z[:, 0].tolist() == Z_HAND
    np.testing.assert_allclose(V[:, 0], V_HAND, rtol=1e-6)
    np.testing.assert_allclose(A[:, 0], A_HAND, rtol=1e-6)
    np.testing.assert_allclose(final.v[0], [0.15625, 0.296875], rtol=1e-6)
    np.testing.assert_allclose(final.a[0], [0.3125, 0.3125], rtol=1e-6)
    assert final.z[0].tolist() == [1, 0]
    assert final.r[0].tolist() == [1, 0]


def test_refractoriness_is_what_stops_step_1():
    Z, _, _, final = hand_layer(n_refractory=0)
    # without refractoriness both neurons fire at t0 and t1 (v=[.65,.775] > A=[.1,.6])
    assert Z[:2, 0].tolist() == [[1, 1], [1, 1]]
    assert final.r.abs().sum() == 0


def test_long_refractory_period_counts_down():
    Z, _, _, _ = alif(torch.ones(8, 1, 1), f32([[10.0]]), f32([[0.0]]), f32([0.0]), f32([0.0]), f32([0.0]),
                      thr=0.1, n_refractory=3)
    # alpha = 0: v = I - A*z; fires, then 3 steps blocked, then fires again
    assert Z[:, 0, 0].tolist() == [1, 0, 0, 0, 1, 0, 0, 0]


def test_threshold_adaptation_decays_with_rho():
    # one spike at t0, then silence: a(t) = (1 - rho) * rho^(t-1) for t >= 1
    rho = 0.9
    X = torch.zeros(6, 1, 1)
    X[0] = 1
    _, _, A, _ = alif(X, f32([[1.0]]), f32([[0.0]]), f32([2.0]), f32([0.0]), f32([rho]), thr=0.01)
    expected = [0.01] + [0.01 + 2.0 * (1 - rho) * rho ** (t - 1) for t in range(1, 6)]
    np.testing.assert_allclose(A[:, 0, 0], expected, rtol=1e-5)


def test_streaming_split_equals_one_call():
    g = torch.Generator().manual_seed(0)
    T, B, I, H = 60, 3, 7, 11
    X = (torch.rand(T, B, I, generator=g) < 0.3).float()
    W = torch.randn(H, I, generator=g) * 0.5
    R = torch.randn(H, H, generator=g) * 0.5
    beta = torch.rand(H, generator=g) * 2
    alpha, rho = torch.full((H,), 0.9), torch.full((H,), 0.99)
    whole = alif(X, W, R, beta, alpha, rho, 0.05, 2)
    assert whole.Z.sum() > 0
    # r counts down from n_refractory = 2 after each neuron's last spike
    since = [[next((k for k in range(T) if whole.Z[T - 1 - k, b, h]), T) for h in range(H)] for b in range(B)]
    assert whole.final_state.r.tolist() == [[float(max(2 - k, 0)) for k in row] for row in since]
    assert whole.final_state.r.max() == 2
    first = alif(X[:23], W, R, beta, alpha, rho, 0.05, 2)
    second = alif(X[23:], W, R, beta, alpha, rho, 0.05, 2, state=first.final_state)
    for a, b in ((whole.Z, torch.cat([first.Z, second.Z])), (whole.V, torch.cat([first.V, second.V])),
                 (whole.A, torch.cat([first.A, second.A]))):
        assert torch.equal(a, b)
    for a, b in zip(whole.final_state, second.final_state):
        assert torch.equal(a, b)


def test_numpy_inputs_accepted():
    Z, _, _, _ = alif(np.ones((2, 1, 1), np.float32), np.ones((1, 1), np.float32), np.zeros((1, 1), np.float32),
                      np.zeros(1, np.float32), np.zeros(1, np.float32), np.zeros(1, np.float32))
    assert isinstance(Z, torch.Tensor) and Z.tolist() == [[[1.0]], [[1.0]]]


def test_li_matches_hand_derivation():
    # y = .5 y + .5 (X W^T + .5): drives 1.5, 2.5, .5 -> .75, 1.625, 1.0625
    Y, final = li(f32([[[1, 0]], [[0, 1]], [[0, 0]]]), f32([[1.0, 2.0]]), f32([0.5]), f32([0.5]))
    np.testing.assert_allclose(Y[:, 0, 0], [0.75, 1.625, 1.0625], rtol=1e-6)
    assert final.item() == pytest.approx(1.0625)
    Y2, _ = li(f32([[[0, 0]]]), f32([[1.0, 2.0]]), f32([0.5]), y0=f32([[2.0]]))
    assert Y2.item() == pytest.approx(1.0)


@pytest.mark.parametrize("change, message", [
    ({"X": torch.zeros(3, 1, 2)}, "'W' has shape"),
    ({"R": torch.zeros(2, 3)}, "'R' has shape [2, 3], expected [2, 2]"),
    ({"beta": torch.zeros(3)}, "'beta' has shape"),
    ({"X": torch.zeros(3, 1, 1, dtype=torch.float64)}, "'X' must be float32"),
    ({"n_refractory": -1}, "n_refractory"),
    ({"thr": float("nan")}, "attribute 'thr' must be finite, got nan"),
    ({"thr": float("inf")}, "attribute 'thr' must be finite, got inf"),
    ({"state": ALIFState(*[torch.zeros(2, 2)] * 4)}, "'initial_v' has shape [2, 2], expected [1, 2]"),
])
def test_alif_rejects_what_the_spec_rejects(change, message):
    kw = dict(X=torch.zeros(3, 1, 1), W=f32(W), R=f32(R), beta=f32([0, 1]), alpha=f32([.5, .5]), rho=f32([.5, .5]))
    kw.update(change)
    with pytest.raises(SpecError) as e:
        alif(**kw)
    assert message in str(e.value) and "ai.lsnn::ALIF" in str(e.value)


def test_li_rejects_bad_bias():
    with pytest.raises(SpecError, match="'bias' has shape"):
        li(torch.zeros(2, 1, 2), torch.zeros(3, 2), torch.zeros(3), bias=torch.zeros(2))
