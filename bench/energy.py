"""Synaptic operations and spike-based energy, as NeuroBench defines them.

Per time step and synapse layer with weights ``W [out, in]``:

* a binary (spike) input costs one accumulate (AC) per *active* input per
  fan-out synapse: ``ACs = sum_{i: x_i != 0} fanout(i)``, where ``fanout(i)``
  counts the nonzero weights ``W[:, i]``;
* a real-valued input costs one multiply-accumulate (MAC) per synapse:
  ``MACs = nnz(W)``.

An LSNN has three synapse layers: input (``X -> ALIF``, binary for spike
inputs), recurrent (``z[t-1] -> ALIF``, always spikes) and readout
(``Z -> LI``, spikes). An LSTM is counted the same way: its input layer
(ACs for spike inputs), its recurrent layer (``h`` is real: MACs for all
``4H x H`` weights), its gate arithmetic (``c = f*c + i*g`` and
``h = o*tanh(c)``: 3 MACs per unit; nonlinearities are not counted) and its
linear readout (MACs). Neuron state updates are not synaptic operations and
are not counted, as in NeuroBench.

Energy = ACs x E_AC + MACs x E_MAC, by default E_AC = 0.9 pJ and
E_MAC = 4.6 pJ: 32-bit floating-point add and multiply-add at 45 nm
(M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

E_AC_PJ = 0.9
E_MAC_PJ = 4.6
SOURCE = ('M. Horowitz, "Computing\'s energy problem (and what we can do about it)", ISSCC 2014: '
          "45 nm, 32-bit float add 0.9 pJ, multiply 3.7 pJ (MAC = 4.6 pJ)")


@dataclass
class SynOps:
    acs: float = 0.0
    macs: float = 0.0

    def __add__(self, other: "SynOps") -> "SynOps":
        return SynOps(self.acs + other.acs, self.macs + other.macs)

    def energy_pj(self, e_ac: float = E_AC_PJ, e_mac: float = E_MAC_PJ) -> float:
        return self.acs * e_ac + self.macs * e_mac


def is_binary(x: np.ndarray) -> bool:
    return bool(np.isin(x, (0.0, 1.0)).all())


def layer_ops(x: np.ndarray, W: np.ndarray, binary: bool | None = None) -> SynOps:
    """Synaptic operations of one layer over a whole sequence batch; ``x`` is ``[T, B, in]``,
    ``W`` is ``[out, in]``. Totals over all steps and sequences."""
    W = np.asarray(W)
    binary = is_binary(x) if binary is None else binary
    fanout = (W != 0).sum(0)  # [in]
    if binary:
        return SynOps(acs=float(((x != 0).reshape(-1, x.shape[-1]) @ fanout).sum()))
    steps = x.shape[0] * x.shape[1]
    return SynOps(macs=float(steps * int(fanout.sum())))


def lsnn_ops(X: np.ndarray, Z: np.ndarray, W: np.ndarray, R: np.ndarray, W_out: np.ndarray,
             initial_z: np.ndarray | None = None) -> dict[str, SynOps]:
    """Per-layer synaptic operations of an LSNN over ``[T, B]`` (totals)."""
    z0 = np.zeros_like(Z[:1]) if initial_z is None else initial_z[None]
    previous = np.concatenate([z0, Z[:-1]])  # the recurrent input at step t is z[t-1]
    return {"input": layer_ops(X, W), "recurrent": layer_ops(previous, R, binary=True),
            "readout": layer_ops(Z, W_out, binary=True)}


def lstm_ops(X: np.ndarray, W_ih: np.ndarray, W_hh: np.ndarray, W_out: np.ndarray) -> dict[str, SynOps]:
    """Per-layer operations of an LSTM (``W_ih [4H, I]``, ``W_hh [4H, H]``) over ``[T, B]``."""
    T, B = X.shape[:2]
    H = W_hh.shape[1]
    h_dummy = np.ones((T, B, H), np.float32) * 0.5  # h is real-valued: every synapse is a MAC
    return {"input": layer_ops(X, W_ih), "recurrent": layer_ops(h_dummy, W_hh, binary=False),
            "gates": SynOps(macs=float(T * B * 3 * H)),
            "readout": layer_ops(h_dummy, W_out, binary=False)}


def model_ops(model, X: np.ndarray, Z: np.ndarray | None) -> dict[str, SynOps]:
    """Per-layer operations of a reference model (:mod:`lsnn.reference.modules`) on inputs ``X``;
    ``Z`` is its spikes, ``None`` for the LSTM."""
    def w(t):
        return t.detach().cpu().numpy()

    if Z is not None:
        return lsnn_ops(X, Z, w(model.alif.W), w(model.alif.R), w(model.readout.W))
    return lstm_ops(X, w(model.lstm.weight_ih_l0), w(model.lstm.weight_hh_l0), w(model.readout.weight))
