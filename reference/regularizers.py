"""Firing-rate regulariser of Bellec et al. (2018)."""
from __future__ import annotations

import torch

from . import fused


class _MeanOverSteps(torch.autograd.Function):
    """``f_j = sum_{t,b} Z[t, b, j] / (T B)``, whose gradient ``dL/dZ[t, b, j] = g_j / (T B)`` is
    handed back as a broadcast view of ``[H]`` values: the same numbers as ``Z.mean``'s backward,
    which writes all ``T B H`` of them out (47 MB at batch 64 of sMNIST) to be read once."""

    @staticmethod
    def forward(ctx, Z):
        ctx.shape = Z.shape
        return Z.mean(dim=(0, 1))

    @staticmethod
    def backward(ctx, g):
        T, B, _ = ctx.shape
        return (g / (T * B)).expand(ctx.shape)


def firing_rates(Z: torch.Tensor) -> torch.Tensor:
    """Spikes per step of each neuron, averaged over time and batch (``Z`` is ``[T, B, H]``): the
    mean the fused ALIF kernel computed with ``Z`` where it made it (its gradient then never
    expands to ``Z``'s shape), else ``Z.mean(dim=(0, 1))`` with a broadcast gradient."""
    rates = fused.spike_rates(Z)
    return _MeanOverSteps.apply(Z) if rates is None else rates


def firing_rates_hz(Z: torch.Tensor, dt_ms: float = 1.0) -> torch.Tensor:
    """Mean rate of each neuron over time and batch, in Hz (``Z`` is ``[T, B, H]``)."""
    return firing_rates(Z) * (1000.0 / dt_ms)


def firing_rate_loss(Z: torch.Tensor, target_hz: float = 10.0, dt_ms: float = 1.0) -> torch.Tensor:
    """``sum_j (f_j - f0)^2`` with rates ``f`` in spikes per step (``f0 = target_hz * dt``).

    Pulls every neuron toward the target rate; scale it with a coefficient.
    """
    return rate_loss(firing_rates(Z), target_hz, dt_ms)


def rate_loss(per_step: torch.Tensor, target_hz: float = 10.0, dt_ms: float = 1.0) -> torch.Tensor:
    """:func:`firing_rate_loss` of rates already averaged (spikes per step of each neuron, ``[H]``),
    e.g. over the processes of data-parallel training."""
    return ((per_step - target_hz * dt_ms / 1000.0) ** 2).sum()


def population_rates_hz(rates: torch.Tensor, config) -> dict:
    """Mean rate of all neurons, of the LIF ones (the first ``config.n_lif``) and of the adaptive
    ones (the rest), in Hz; ``None`` for an empty population."""
    rates = torch.as_tensor(rates)
    n_lif = config.n_lif
    return {"all": float(rates.mean()),
            "lif": float(rates[:n_lif].mean()) if n_lif else None,
            "alif": float(rates[n_lif:].mean()) if config.n_alif else None}
