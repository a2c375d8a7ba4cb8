import torch

from lsnn.reference import heaviside, pseudo_derivative, spike


def test_forward_is_strict_heaviside():
    v = torch.tensor([0.0, 0.01, 0.0100001, 1.0])
    A = torch.full((4,), 0.01)
    assert heaviside(v, A).tolist() == [0, 0, 1, 1]
    assert torch.equal(spike(v, A), heaviside(v, A))


def test_pseudo_derivative_is_the_papers():
    A = torch.tensor([0.01, 0.01, 0.01, 0.02])
    v = torch.tensor([0.01, 0.015, 0.03, 0.01], requires_grad=True)
    A_ = A.clone().requires_grad_(True)
    spike(v, A_).sum().backward()
    # 0.3 * max(0, 1 - |v - A| / A) / A: at v = A -> 0.3 / A; half way -> 0.15 / A; far -> 0
    expected = torch.tensor([30.0, 15.0, 0.0, 7.5])
    torch.testing.assert_close(v.grad, expected)
    torch.testing.assert_close(A_.grad, -expected)
    torch.testing.assert_close(pseudo_derivative(v.detach(), A), expected)
