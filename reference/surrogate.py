"""Spike functions: the Heaviside of the spec, and its trainable twin.

Forward, both are ``H(v - A)``: 1 where ``v > A``, else 0. For BPTT the
trainable one uses the pseudo-derivative of Bellec et al. (2018)::

    dz/dv = gamma * max(0, 1 - |(v - A) / A|) / A,   gamma = 0.3
    dz/dA = -dz/dv

so gradients reach the threshold, hence the adaptation variable, too.

``gamma * max(0, 1 - |x|)`` is the derivative with respect to the scaled potential
``x = (v - A) / A``, the variable the spike function of Bellec et al.'s code takes (and the form
the spec, ``shared/spec/ops.md``, quotes as a training-only detail); with respect to ``v`` it
carries the factor ``1 / A``. That factor matters: thresholds are ``0.01`` here, so without it
every path through a spike is scaled down a hundredfold against the membrane's own, the
gradient through the recurrent spikes and the adaptation fades within a few steps, and
meta-trained LSNNs learned to store nothing in their thresholds (an ``l2l-regression`` LSNN did
as well with ``beta = 0``).
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
    """``H(v - A)`` with the pseudo-derivative ``0.3 * max(0, 1 - |(v - A) / A|) / A``."""
    return _SpikePD.apply(v, A)


def pseudo_derivative(v: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """The value of ``dz/dv`` that :func:`spike` back-propagates."""
    return GAMMA * torch.clamp(1 - torch.abs((v - A) / A), min=0) / A
