"""Spike functions: the Heaviside of the spec, and its trainable twin.

Forward, both are ``H(v - A)``: 1 where ``v > A``, else 0. For BPTT the
trainable one uses the pseudo-derivative of Bellec et al. (2018)::

    dz/dv = gamma * max(0, 1 - |(v - A) / A|),   gamma = 0.3
    dz/dA = -dz/dv

so gradients reach the threshold, hence the adaptation variable, too.
"""
from __future__ import annotations

import torch

GAMMA = 0.3


def heaviside(v: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``H(v - A)``, strictly greater, as float32."""
    return (v > A).to(v.dtype)


class _SpikePD(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, A):
        ctx.save_for_backward(v, A)
        return (v > A).to(v.dtype)

    @staticmethod
    def backward(ctx, grad):
        v, A = ctx.saved_tensors
        psi = pseudo_derivative(v, A)
        g = grad * psi
        return g, -g


def spike(v: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``H(v - A)`` with the pseudo-derivative ``0.3 * max(0, 1 - |(v - A) / A|)``."""
    return _SpikePD.apply(v, A)


def pseudo_derivative(v: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """The value of ``dz/dv`` that :func:`spike` back-propagates."""
    return GAMMA * torch.clamp(1 - torch.abs((v - A) / A), min=0)
