"""What a recurrent kernel computes: one direction of an ONNX ``LSTM``, ``GRU`` or ``RNN`` node.

The importer normalises every node to calls of a time-loop kernel on ``[T, B, I]``, one per
direction (:mod:`lsnn.compiler.onnx.recurrent`); a :class:`Cell` says what the kernel of that
call computes. Kernel arguments, in order: ``X [T, B, I]``, ``W^T [I, G]``, ``R^T [H, G]``,
``bias [2, G]`` (row 0 ``Wb``, row 1 ``Rb``), ``lens [B]`` (read only with
``sequence_lens``; float32, exact up to 2^24 steps, as Cortex-M's C kernels take float32 only), ``P [3H]`` (peepholes ``i, o, f``, read only with ``peepholes``),
``h0 [B, H]``, ``c0 [B, H]`` (read only by LSTM); outputs ``Y [T, B, H]``, ``Y_h [B, H]``,
``Y_c [B, H]`` (written only by LSTM). ``G`` is :data:`GATES` times ``H``. A target's kernel of
the plain LSTM (``LSTM``, ``LSTM+Readout``) takes ``R^T`` in the target's own layout
(:meth:`lsnn.targets.base.Target.lstm_recurrent_layout`).
"""
from __future__ import annotations

from dataclasses import dataclass

#: gates of each op, in ONNX's order
GATES = {"LSTM": "iofc", "GRU": "zrh", "RNN": "i"}

#: ONNX's activation functions (lowercase name -> (default alpha, default beta); None: the
#: function takes no such parameter)
ACTIVATIONS = {"relu": (None, None), "tanh": (None, None), "sigmoid": (None, None), "affine": (1.0, 0.0),
               "leakyrelu": (0.01, None), "thresholdedrelu": (1.0, None), "scaledtanh": (1.0, 1.0),
               "hardsigmoid": (0.2, 0.5), "elu": (1.0, None), "softsign": (None, None), "softplus": (None, None)}

#: the activations of each op when the node gives none, per direction
DEFAULT_ACTIVATIONS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"), "RNN": ("tanh",)}


@dataclass(frozen=True)
class Activation:
    name: str  # lowercase, a key of ACTIVATIONS
    alpha: float | None = None
    beta: float | None = None


@dataclass(frozen=True)
class Cell:
    """One direction of a recurrent node, as its kernel computes it."""
    op: str                               # LSTM, GRU or RNN
    activations: tuple[Activation, ...]   # f, g, h (LSTM); f, g (GRU); f (RNN)
    reverse: bool = False                 # walk each sequence from its last step back to step 0
    sequence_lens: bool = False           # steps at or past lens[b] keep the state and write Y = 0
    peepholes: bool = False               # LSTM only
    clip: float | None = None             # bound of every gate's input
    input_forget: bool = False            # LSTM only: f = 1 - i
    linear_before_reset: bool = False     # GRU only
    finite_weights: bool = False          # constants checked finite: a zero input may be skipped

    @property
    def gates(self) -> int:
        return len(GATES[self.op])

    def plain(self) -> bool:
        """The LSTM of the fast forward kernel (targets' ``LSTM``): default activations, forward,
        whole sequences, no peepholes, clip or coupled gates, finite constant weights."""
        return (self.op == "LSTM" and not (self.reverse or self.sequence_lens or self.peepholes or self.input_forget)
                and self.clip is None and self.finite_weights
                and self.activations == tuple(Activation(n) for n in DEFAULT_ACTIVATIONS["LSTM"]))
