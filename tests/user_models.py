"""Networks a user might write: only the public layers (``lsnn.reference.ALIF``, ``LI``) and stock
PyTorch modules, time-major ``[T, B, features]``. Issue 13's four architectures, shared by the
export, compile, verify and bench tests."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lsnn.reference import ALIF, LI

N_IN = 12


class StackedALIF(nn.Module):
    """(a) Two stacked ALIF layers of different sizes, the first with refractoriness, and an LI readout."""

    def __init__(self, n_in=N_IN, n_out=3):
        super().__init__()
        self.alif1 = ALIF(n_in, 16, 8, n_refractory=3, thr=0.02)
        self.alif2 = ALIF(24, 6, 10, n_refractory=0, tau_a=300.0, thr=0.03)
        self.readout = LI(16, n_out, tau=10.0)

    def forward(self, x):
        return self.readout(self.alif2(self.alif1(x)))


class LinearFrontEnd(nn.Module):
    """(b) Linear + ReLU front end, one ALIF layer, a per-step ``nn.Linear`` readout."""

    def __init__(self, n_in=N_IN, n_out=4):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_in, 20), nn.ReLU())
        self.alif = ALIF(20, 10, 14, n_refractory=2, thr=0.05)
        self.readout = nn.Linear(24, n_out)

    def forward(self, x):
        return self.readout(self.alif(self.encoder(x)))


class ConvFrontEnd(nn.Module):
    """(c) A 1-D convolution over each step's input channels, then ALIF and LI."""

    def __init__(self, n_in=N_IN, n_out=3, channels=4, kernel=3):
        super().__init__()
        self.conv = nn.Conv1d(1, channels, kernel)
        width = channels * (n_in - kernel + 1)
        self.alif = ALIF(width, 12, 12, n_refractory=1, thr=0.05)
        self.readout = LI(24, n_out)

    def forward(self, x):
        T, B, n = x.shape
        features = self.conv(x.reshape(T * B, 1, n))  # every step of every sequence on its own
        return self.readout(self.alif(features.reshape(T, B, -1)))


class LIFThenAdaptive(nn.Module):
    """(d) An ALIF layer of only LIF neurons, LayerNorm, a second ALIF layer of only adaptive neurons."""

    def __init__(self, n_in=N_IN, n_out=3):
        super().__init__()
        self.lif = ALIF(n_in, 20, 0, n_refractory=2, thr=0.02)
        self.norm = nn.LayerNorm(20)
        self.adaptive = ALIF(20, 0, 16, n_refractory=2, thr=0.05, beta=1.0)
        self.readout = LI(16, n_out)

    def forward(self, x):
        return self.readout(self.adaptive(self.norm(self.lif(x))))


ARCHITECTURES = {"stacked": StackedALIF, "linear-front": LinearFrontEnd, "conv-front": ConvFrontEnd,
                 "lif-then-adaptive": LIFThenAdaptive}


def build(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ARCHITECTURES[name]().eval()


def inputs(T=40, B=2, seed=1) -> torch.Tensor:
    """Input currents that make every layer spike."""
    return torch.from_numpy(np.random.default_rng(seed).normal(0.5, 1.0, (T, B, N_IN)).astype(np.float32))
