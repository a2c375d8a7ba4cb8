"""The spiking layers users compose with any PyTorch modules: :class:`ALIF` and :class:`LI`.

Each is a thin ``nn.Module`` around one op of ``shared/spec/ops.md``: it holds
the op's parameters and hyperparameters and calls the functional reference
(:mod:`.functional`). Sequences are time-major, ``[T, B, features]``.

* ``ALIF(n_in, n_lif, n_alif, ...)``: one recurrent layer, ``n_lif`` plain LIF
  neurons (``beta = 0``) followed by ``n_alif`` adaptive ones, all-to-all
  recurrent weights without self-connections; ``[T, B, n_in] -> [T, B, H]``
  spikes, ``H = n_lif + n_alif``.
* ``LI(n_in, n_out, ...)``: leaky-integrator readout, ``[T, B, n_in] -> [T, B, n_out]``.

While training (gradients on), the layers back-propagate through every step
(``ALIF`` with the paper's pseudo-derivative): through the fused C++ kernels
of :mod:`.fused` (forward and backward each one call over the sequence), or,
with ``fused=False`` or where those cannot be built, through the eager
functional reference, a PyTorch loop over the steps. Otherwise, and
always under ``torch.export``, both call the custom ops of :mod:`.ops`, which
``lsnn.compiler.export`` turns into ``ai.lsnn::ALIF`` / ``ai.lsnn::LI`` nodes.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from . import fused as fused_kernel
from . import ops
from .errors import ConfigError
from .functional import ALIFOutput, ALIFState, LIOutput
from .functional import li as li_reference


@dataclass(frozen=True)
class ALIFConfig:
    n_in: int
    n_lif: int
    n_alif: int
    tau_m: float = 20.0  # ms, membrane time constant
    tau_a: float = 700.0  # ms, adaptation time constant
    beta: float = 1.8  # threshold increase per unit of adaptation (adaptive neurons only)
    thr: float = 0.01  # baseline threshold
    n_refractory: int = 5  # steps
    dt: float = 1.0  # ms per step
    w_in_scale: float = 1.0  # input weights ~ N(0, w_in_scale^2 / n_in)
    w_rec_scale: float = 1.0  # recurrent weights ~ N(0, w_rec_scale^2 / H)

    @property
    def n_hidden(self) -> int:
        return self.n_lif + self.n_alif


@dataclass(frozen=True)
class LIConfig:
    n_in: int
    n_out: int
    tau: float = 20.0  # ms
    dt: float = 1.0  # ms per step
    bias: bool = True


def _check(name: str, layer: str, value, *, positive: bool = True, integer: bool = False) -> None:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        kind = ("a positive" if positive else "a non-negative") + (" integer" if integer else " number")
        raise ConfigError(f"{layer}: {name} must be {kind}, got {value!r}")


class ALIF(nn.Module):
    """A recurrent layer of LIF and adaptive (ALIF) neurons: ``ai.lsnn::ALIF``.

    Parameters: ``W [H, n_in]`` (input weights), ``R_raw [H, H]`` (recurrent weights, used as
    ``R = R_raw * no_self``: no self-connections). Buffers: ``beta``, ``alpha = exp(-dt/tau_m)``,
    ``rho = exp(-dt/tau_a)``, each ``[H]``.

    ``fused`` (default True) trains through the fused kernel of :mod:`.fused`; False through the
    eager reference. Both give the same spikes and gradients (to float32 rounding); it is not part
    of the layer's configuration, checkpoints or exported graphs.
    """

    def __init__(self, n_in: int, n_lif: int, n_alif: int, *, tau_m: float = 20.0, tau_a: float = 700.0,
                 beta: float = 1.8, thr: float = 0.01, n_refractory: int = 5, dt: float = 1.0,
                 w_in_scale: float = 1.0, w_rec_scale: float = 1.0, fused: bool = True):
        super().__init__()
        self.fused = bool(fused)
        c = ALIFConfig(n_in, n_lif, n_alif, tau_m, tau_a, beta, thr, n_refractory, dt, w_in_scale, w_rec_scale)
        _check("n_in", "ALIF", c.n_in, integer=True)
        for name in ("n_lif", "n_alif", "n_refractory"):
            _check(name, "ALIF", getattr(c, name), positive=False, integer=True)
        for name in ("tau_m", "tau_a", "dt"):
            _check(name, "ALIF", getattr(c, name))
        for name in ("beta", "w_in_scale", "w_rec_scale"):
            _check(name, "ALIF", getattr(c, name), positive=False)
        if not isinstance(thr, (int, float)) or not math.isfinite(thr):
            raise ConfigError(f"ALIF: thr must be a finite number, got {thr!r}")
        H = c.n_hidden
        if H <= 0:
            raise ConfigError("ALIF: a layer needs at least one neuron (n_lif + n_alif > 0)")
        self.config = c
        self.W = nn.Parameter(torch.randn(H, n_in) * w_in_scale / math.sqrt(n_in))
        self.R_raw = nn.Parameter(torch.randn(H, H) * w_rec_scale / math.sqrt(H))
        self.register_buffer("no_self", 1 - torch.eye(H))
        self.register_buffer("beta", torch.cat([torch.zeros(n_lif), torch.full((n_alif,), float(beta))]))
        self.register_buffer("alpha", torch.full((H,), math.exp(-dt / tau_m)))
        self.register_buffer("rho", torch.full((H,), math.exp(-dt / tau_a)))

    @property
    def R(self) -> torch.Tensor:
        """Recurrent weights with the diagonal (self-connections) held at zero."""
        return self.R_raw * self.no_self

    @property
    def n_hidden(self) -> int:
        return self.config.n_hidden

    def sequence(self, X: torch.Tensor, state: ALIFState | tuple | None = None) -> ALIFOutput:
        """All of the op's outputs: spikes ``Z``, membrane ``V``, thresholds ``A`` (each
        ``[T, B, H]``) and the final :class:`ALIFState`."""
        c = self.config
        args = (X, self.W, self.R, self.beta, self.alpha, self.rho)
        if torch.is_grad_enabled() and not torch.compiler.is_exporting():
            train = fused_kernel.alif if self.fused else fused_kernel.eager_alif
            return train(*args, c.thr, c.n_refractory, state=state)
        slots = tuple(state) if state is not None else (None,) * 4
        Z, V, A, *final = ops.alif(*args, *slots, thr=float(c.thr), n_refractory=int(c.n_refractory))
        return ALIFOutput(Z, V, A, ALIFState(*final))

    def forward(self, X: torch.Tensor, state: ALIFState | tuple | None = None, return_state: bool = False):
        """Spikes ``[T, B, H]`` of inputs ``X [T, B, n_in]``; with ``return_state``,
        ``(spikes, final ALIFState)``. ``state`` continues an earlier sequence (zeros if None)."""
        out = self.sequence(X, state)
        return (out.Z, out.final_state) if return_state else out.Z

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())


class LI(nn.Module):
    """A leaky-integrator readout: ``ai.lsnn::LI``. Parameters ``W [n_out, n_in]`` and, unless
    ``bias=False``, ``bias [n_out]``; buffer ``alpha = exp(-dt/tau)``. ``fused`` as in :class:`ALIF`."""

    def __init__(self, n_in: int, n_out: int, *, tau: float = 20.0, dt: float = 1.0, bias: bool = True,
                 fused: bool = True):
        super().__init__()
        self.fused = bool(fused)
        c = LIConfig(n_in, n_out, tau, dt, bool(bias))
        for name in ("n_in", "n_out"):
            _check(name, "LI", getattr(c, name), integer=True)
        for name in ("tau", "dt"):
            _check(name, "LI", getattr(c, name))
        self.config = c
        self.W = nn.Parameter(torch.randn(n_out, n_in) / math.sqrt(n_in))
        self.bias = nn.Parameter(torch.zeros(n_out)) if bias else None
        self.register_buffer("alpha", torch.full((n_out,), math.exp(-dt / tau)))

    def sequence(self, X: torch.Tensor, y0: torch.Tensor | None = None) -> LIOutput:
        if torch.is_grad_enabled() and not torch.compiler.is_exporting():
            train = fused_kernel.li if self.fused else li_reference
            return train(X, self.W, self.alpha, self.bias, y0)
        return LIOutput(*ops.li(X, self.W, self.alpha, self.bias, y0))

    def forward(self, X: torch.Tensor, y0: torch.Tensor | None = None, return_state: bool = False):
        """Readout ``[T, B, n_out]``; with ``return_state``, ``(readout, final y [B, n_out])``."""
        out = self.sequence(X, y0)
        return (out.Y, out.final_y) if return_state else out.Y

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self.config).items())


LAYERS = (ALIF, LI)
