"""The executable definition of the ``ai.lsnn`` operators (``shared/spec/ops.md``, version 1).

Every other implementation (ONNX function bodies, compiled kernels) is checked
against these functions. They are pure: parameters and state go in as
NamedTuples or tensors, outputs and the final state come out.

ALIF, for ``t = 0 .. T-1`` (elementwise over ``[B, H]`` except the products)::

    a = rho * a + (1 - rho) * z
    A = thr + beta * a
    I = X[t] @ W^T + z @ R^T
    v = alpha * v + (1 - alpha) * I - A * z
    s = H(v - A) * (r == 0)            # H(x) = 1 where x > 0
    r = where(s == 1, n_refractory, max(r - 1, 0))
    z = s
    Z[t], V[t], A_out[t] = z, v, A

LI::

    y = alpha * y + (1 - alpha) * (X[t] @ W^T + bias);  Y[t] = y
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch

from .surrogate import heaviside
from .errors import LsnnError


class ALIFState(NamedTuple):
    """Recurrent state of an ALIF layer, each ``[B, H]``: membrane ``v``,
    adaptation ``a``, last spikes ``z``, refractory steps left ``r``."""

    v: torch.Tensor
    a: torch.Tensor
    z: torch.Tensor
    r: torch.Tensor


class ALIFParams(NamedTuple):
    """Parameters of an ALIF layer (shapes as in the spec)."""

    W: torch.Tensor  # [H, I]
    R: torch.Tensor  # [H, H]
    beta: torch.Tensor  # [H]
    alpha: torch.Tensor  # [H]
    rho: torch.Tensor  # [H]
    thr: float = 0.01
    n_refractory: int = 0


class ALIFOutput(NamedTuple):
    Z: torch.Tensor
    V: torch.Tensor
    A: torch.Tensor
    final_state: ALIFState


class LIOutput(NamedTuple):
    Y: torch.Tensor
    final_y: torch.Tensor


class SpecError(LsnnError):
    """An input that ``shared/spec/ops.md`` rejects (shape, dtype, attribute)."""


def _tensor(x, name: str, op: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise SpecError(f"{op}: input '{name}' must be a tensor or numpy array, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise SpecError(f"{op}: input '{name}' must be float32, got {x.dtype}")
    return x


def _shape(x: torch.Tensor, name: str, op: str, expected: tuple) -> None:
    ok = x.dim() == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape))
    if not ok:
        want = "[" + ", ".join("?" if e is None else str(e) for e in expected) + "]"
        raise SpecError(f"{op}: input '{name}' has shape {list(x.shape)}, expected {want}")


def zero_state(batch: int, hidden: int, like: torch.Tensor | None = None) -> ALIFState:
    kw = {"dtype": torch.float32, "device": like.device if like is not None else None}
    return ALIFState(*(torch.zeros(batch, hidden, **kw) for _ in range(4)))


def alif_step(
    current: torch.Tensor,
    state: ALIFState,
    p: ALIFParams,
    spike_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = heaviside,
) -> tuple[torch.Tensor, torch.Tensor, ALIFState]:
    """One step of the ALIF recurrence.

    ``current`` is this step's input projection ``X[t] @ W^T`` ([B, H]);
    returns ``(A, state)`` where ``state.z`` are the new spikes and ``state.v``
    the membrane potential after the update.
    """
    v, a, z, r = state
    a = p.rho * a + (1 - p.rho) * z
    A = p.thr + p.beta * a
    i = current + z @ p.R.t()
    v = p.alpha * v + (1 - p.alpha) * i - A * z
    s = spike_fn(v, A) * (r == 0).to(v.dtype)
    r = torch.where(s > 0, torch.full_like(r, float(p.n_refractory)), torch.clamp(r - 1, min=0))
    return A, ALIFState(v, a, s, r)


def alif(
    X,
    W,
    R,
    beta,
    alpha,
    rho,
    thr: float = 0.01,
    n_refractory: int = 0,
    state: ALIFState | tuple | None = None,
    spike_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = heaviside,
) -> ALIFOutput:
    """``ai.lsnn::ALIF``: run all ``T`` steps of an ALIF layer (equations in the module docstring).

    ``X`` is ``[T, B, I]``; returns ``(Z, V, A, final_state)`` with ``Z, V, A``
    of shape ``[T, B, H]`` and ``final_state = ALIFState(v, a, z, r)``.
    ``spike_fn(v, A)`` is the Heaviside ``H(v - A)``; training passes the
    pseudo-derivative version (:func:`lsnn.reference.surrogate.spike`), whose
    forward value is identical.
    """
    op = "ai.lsnn::ALIF"
    X, W, R, beta, alpha, rho = (_tensor(t, n, op) for t, n in zip(
        (X, W, R, beta, alpha, rho), ("X", "W", "R", "beta", "alpha", "rho")))
    _shape(X, "X", op, (None, None, None))
    T, B, I = X.shape
    _shape(W, "W", op, (None, I))
    H = W.shape[0]
    _shape(R, "R", op, (H, H))
    for t, n in ((beta, "beta"), (alpha, "alpha"), (rho, "rho")):
        _shape(t, n, op, (H,))
    if not math.isfinite(thr):
        raise SpecError(f"{op}: attribute 'thr' must be finite, got {thr}")
    if int(n_refractory) != n_refractory or n_refractory < 0:
        raise SpecError(f"{op}: attribute 'n_refractory' must be a non-negative integer, got {n_refractory}")
    if state is None:
        state = zero_state(B, H, X)
    else:
        state = ALIFState(*(_tensor(s, n, op) for s, n in zip(state, ("initial_v", "initial_a", "initial_z", "initial_r"))))
        for s, n in zip(state, ("initial_v", "initial_a", "initial_z", "initial_r")):
            _shape(s, n, op, (B, H))
    p = ALIFParams(W, R, beta, alpha, rho, float(thr), int(n_refractory))
    # the input projection of every step at once; unbind (not indexing) keeps BPTT linear in T
    currents = (X @ W.t()).unbind(0)
    Z, V, A = [], [], []
    for t in range(T):
        a_t, state = alif_step(currents[t], state, p, spike_fn)
        Z.append(state.z)
        V.append(state.v)
        A.append(a_t)
    if T == 0:
        empty = X.new_zeros(0, B, H)
        return ALIFOutput(empty, empty, empty, state)
    return ALIFOutput(torch.stack(Z), torch.stack(V), torch.stack(A), state)


def li(X, W, alpha, bias=None, y0=None) -> LIOutput:
    """``ai.lsnn::LI``: leaky integrator readout, ``y = alpha*y + (1-alpha)*(X[t] @ W^T + bias)``.

    ``X`` is ``[T, B, I]``, ``W`` ``[O, I]``; returns ``(Y [T, B, O], final_y [B, O])``.
    """
    op = "ai.lsnn::LI"
    X, W, alpha = _tensor(X, "X", op), _tensor(W, "W", op), _tensor(alpha, "alpha", op)
    _shape(X, "X", op, (None, None, None))
    T, B, I = X.shape
    _shape(W, "W", op, (None, I))
    O = W.shape[0]
    _shape(alpha, "alpha", op, (O,))
    if bias is not None:
        bias = _tensor(bias, "bias", op)
        _shape(bias, "bias", op, (O,))
    y = X.new_zeros(B, O) if y0 is None else _tensor(y0, "initial_y", op)
    _shape(y, "initial_y", op, (B, O))
    drive = X @ W.t()
    if bias is not None:
        drive = drive + bias
    drive = ((1 - alpha) * drive).unbind(0)
    Y = []
    for t in range(T):
        y = alpha * y + drive[t]
        Y.append(y)
    return LIOutput(torch.stack(Y) if Y else X.new_zeros(0, B, O), y)
