"""Thin ``nn.Module`` wrappers around the pure step functions of :mod:`.functional`.

* :class:`LSNN`: one :class:`~.layers.ALIF` layer holding ``n_lif`` plain LIF
  neurons (``beta = 0``) followed by ``n_alif`` adaptive ones, and an
  :class:`~.layers.LI` readout (``ai.lsnn::ALIF`` and ``ai.lsnn::LI``).
* :class:`LIFNet`: the same with no adaptive neurons (the paper's control).
* :class:`LSTMNet`, :class:`GRUNet`: ``torch.nn.LSTM`` / ``torch.nn.GRU`` with a linear readout
  (the baselines, :class:`RecurrentNet`).

Every model maps ``X [T, B, n_in]`` to a :class:`NetOutput` whose ``Y`` is the
readout ``[T, B, n_out]``; the spiking ones also return spikes and state.
Defaults are the paper's sequential-MNIST network (Bellec et al. 2018).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
from torch import nn

from . import fused_lstm
from .errors import ConfigError
from .functional import ALIFState
from .layers import ALIF, LI


@dataclass
class LSNNConfig:
    n_in: int = 80
    n_lif: int = 120
    n_alif: int = 100
    n_out: int = 10
    tau_m: float = 20.0  # ms
    tau_a: float = 700.0  # ms
    beta: float = 1.8
    thr: float = 0.01
    n_refractory: int = 5
    dt: float = 1.0  # ms
    tau_out: float = 20.0  # ms
    w_in_scale: float = 1.0  # input weights ~ N(0, w_in_scale^2 / n_in)
    w_rec_scale: float = 1.0  # recurrent weights ~ N(0, w_rec_scale^2 / H)

    @property
    def n_hidden(self) -> int:
        return self.n_lif + self.n_alif


@dataclass
class RecurrentConfig:
    """The configuration of a :class:`RecurrentNet` (LSTM or GRU baseline)."""
    n_in: int = 80
    n_hidden: int = 128
    n_out: int = 10

    @property
    def dt(self) -> float:
        """One step per millisecond of input, as the spiking models by default."""
        return 1.0


LSTMConfig = RecurrentConfig  # the name it had when the LSTM was the only baseline


class NetOutput(NamedTuple):
    Y: torch.Tensor  # readout [T, B, O]
    Z: torch.Tensor | None = None  # spikes [T, B, H]
    V: torch.Tensor | None = None
    A: torch.Tensor | None = None
    state: tuple | None = None


class LSNN(nn.Module):
    """An :class:`~.layers.ALIF` layer (LIF + adaptive neurons) and an :class:`~.layers.LI` readout."""

    kind = "lsnn"
    config_class = LSNNConfig

    def __init__(self, config: LSNNConfig | None = None, **overrides):
        super().__init__()
        c = config or LSNNConfig()
        if overrides:
            c = LSNNConfig(**{**asdict(c), **overrides})
        self.config = c
        self.alif = ALIF(c.n_in, c.n_lif, c.n_alif, tau_m=c.tau_m, tau_a=c.tau_a, beta=c.beta, thr=c.thr,
                         n_refractory=c.n_refractory, dt=c.dt, w_in_scale=c.w_in_scale,
                         w_rec_scale=c.w_rec_scale)
        self.readout = LI(c.n_hidden, c.n_out, tau=c.tau_out, dt=c.dt)
        self.register_load_state_dict_pre_hook(_rename_flat_weights)

    def forward(self, X: torch.Tensor, state: ALIFState | None = None, y0: torch.Tensor | None = None) -> NetOutput:
        Z, V, A, final = self.alif.sequence(X, state)
        Y, final_y = self.readout.sequence(Z, y0)
        return NetOutput(Y, Z, V, A, (final, final_y))


#: the weight names of checkpoints saved before the model was a composition of layers
_FLAT_NAMES = {"W": "alif.W", "R_raw": "alif.R_raw", "no_self": "alif.no_self", "beta": "alif.beta",
               "alpha": "alif.alpha", "rho": "alif.rho", "W_out": "readout.W", "b_out": "readout.bias",
               "alpha_out": "readout.alpha"}


def _rename_flat_weights(module, state_dict, prefix, *args) -> None:
    """Load a checkpoint of the one-module LSNN (``W``, ``R_raw``, ``W_out``, ...) into the layers."""
    for old, new in _FLAT_NAMES.items():
        if prefix + old in state_dict and prefix + new not in state_dict:
            state_dict[prefix + new] = state_dict.pop(prefix + old)


class LIFNet(LSNN):
    """An LSNN without adaptive neurons: every neuron has ``beta = 0``."""

    kind = "lif"

    def __init__(self, config: LSNNConfig | None = None, **overrides):
        c = config or LSNNConfig()
        if overrides:
            c = LSNNConfig(**{**asdict(c), **overrides})
        if c.n_alif:
            c = LSNNConfig(**{**asdict(c), "n_lif": c.n_lif + c.n_alif, "n_alif": 0})
        super().__init__(c)


class RecurrentNet(nn.Module):
    """One ``torch.nn`` recurrent layer (``layer_class``, sequence-first, one direction, with biases)
    followed by a linear readout at every step. The layer is the attribute named ``kind`` (as the
    checkpoints name its weights: ``lstm.weight_ih_l0``, ``gru.weight_ih_l0``). Where a gradient is
    needed it trains through :meth:`fused_sequence` (the same parameters), unless built with
    ``fused=False``; inference and export go through the ``torch.nn`` layer."""

    kind: str
    layer_class: type[nn.RNNBase]
    config_class = RecurrentConfig
    #: the layer's states in ``torch.nn``'s order (an export names them ``initial_<n>``, ``final_<n>``)
    state_names: tuple[str, ...]
    #: the ONNX op of the layer, its attributes, and its gates in ONNX's order as indices of
    #: ``torch.nn``'s gate blocks (``weight_ih_l0`` is ``len(onnx_gates)`` blocks of ``n_hidden`` rows)
    onnx_op: str
    onnx_attributes: dict = {}
    onnx_gates: tuple[int, ...]

    def __init__(self, config: RecurrentConfig | None = None, fused: bool = True, **overrides):
        super().__init__()
        c = config or RecurrentConfig()
        if overrides:
            c = RecurrentConfig(**{**asdict(c), **overrides})
        self.config = c
        self.fused = bool(fused)
        setattr(self, self.kind, self.layer_class(c.n_in, c.n_hidden))
        self.readout = nn.Linear(c.n_hidden, c.n_out)

    @property
    def layer(self) -> nn.RNNBase:
        return getattr(self, self.kind)

    def forward(self, X: torch.Tensor, state=None) -> NetOutput:
        if self.fused and torch.is_grad_enabled() and not torch.compiler.is_exporting():
            H, final = self.fused_sequence(X, state)
        else:
            H, final = self.layer(X, state)
        return NetOutput(self.readout(H), state=final)

    def fused_sequence(self, X: torch.Tensor, state):
        """``self.layer(X, state)`` with a faster backward (the layer's own where there is none)."""
        return self.layer(X, state)

    def states(self, state) -> tuple[torch.Tensor, ...]:
        """The layer's state as ``torch.nn`` returns it, as a tuple in :attr:`state_names` order."""
        return tuple(state) if isinstance(state, tuple) else (state,)


class LSTMNet(RecurrentNet):
    """``torch.nn.LSTM`` and a linear readout; trains through :mod:`.fused_lstm`."""

    kind = "lstm"
    layer_class = nn.LSTM
    state_names = ("h", "c")
    onnx_op = "LSTM"
    onnx_gates = (0, 3, 1, 2)  # torch i, f, g, o; ONNX i, o, f, c

    def fused_sequence(self, X, state):
        return fused_lstm.lstm(self.lstm, X, state)


class GRUNet(RecurrentNet):
    """``torch.nn.GRU`` and a linear readout (ONNX ``GRU`` with ``linear_before_reset=1``)."""

    kind = "gru"
    layer_class = nn.GRU
    state_names = ("h",)
    onnx_op = "GRU"
    onnx_attributes = {"linear_before_reset": 1}  # torch: n = tanh(W_in x + b_in + r (W_hn h + b_hn))
    onnx_gates = (1, 0, 2)  # torch r, z, n; ONNX z, r, h


#: every model ``lsnn train --model`` builds, by kind
MODELS = {cls.kind: cls for cls in (LSNN, LIFNet, LSTMNet, GRUNet)}


def model_class(kind: str) -> type[nn.Module]:
    """The model class of ``kind``, a key of :data:`MODELS`."""
    if kind not in MODELS:
        raise ConfigError(f"unknown model '{kind}'; choose one of {', '.join(sorted(MODELS))}")
    return MODELS[kind]


def build_model(kind: str, **params) -> nn.Module:
    """Build a model by kind (a key of :data:`MODELS`) from config fields."""
    cfg_cls = model_class(kind).config_class
    known = {f.name for f in fields(cfg_cls)}
    unknown = set(params) - known
    if unknown:
        raise ConfigError(f"model '{kind}' has no parameter(s) {sorted(unknown)}")
    return MODELS[kind](cfg_cls(**params))


def model_config(model: nn.Module) -> dict:
    return {"kind": model.kind, **asdict(model.config)}
