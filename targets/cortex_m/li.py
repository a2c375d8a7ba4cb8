"""ai.lsnn::LI for Cortex-M: a TIR kernel written for TVM's C output and small cores.

``y = alpha * y + (1 - alpha) * (X[t] @ W^T + bias)``. The input (an LSNN's
spikes) is gathered into a list of its nonzero entries (:func:`.events.gather`,
NaN and Inf included) and only their rows of ``W^T`` are added, :data:`BLOCK`
outputs at a time in registers; every row when the weights are not known to be
finite (``0 * inf``). Run with ``T = 1`` per call: the state is read from
``initial_y`` and written to ``final_y`` (later steps of a longer call read
``final_y``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

from ..tvmscript import T
from .events import BLOCK, blocks, gather


@dataclass(frozen=True)
class Events:
    """What a readout sums: ``n`` events (a TIR count), ``term(e, o)`` the one of event ``e`` for
    output ``o``."""
    n: object
    term: Callable


@T.macro(hygienic=False)
def integrate(o0, width, events):
    """Outputs ``o0 .. o0 + width - 1`` of step ``t`` of sequence ``b``: the ``events``' terms
    summed in registers, then the leak; written to ``Y`` and the state ``FY``."""
    for j in T.unroll(width):
        acc[j] = T.float32(0)
    for e in range(events.n):
        for j in T.unroll(width):
            acc[j] = acc[j] + events.term(e, o0 + j)
    for j in T.unroll(width):
        y = T.bind(AlphaO[o0 + j] * T.if_then_else(t == 0, Y0[b, o0 + j], FY[b, o0 + j])
                   + (T.float32(1) - AlphaO[o0 + j]) * (acc[j] + BiasO[o0 + j]))
        Y[t, b, o0 + j] = y
        FY[b, o0 + j] = y


@T.macro(hygienic=False)
def readout(nO, events, integrate=integrate):
    """All ``nO`` outputs of step ``t`` (:func:`integrate`), :data:`BLOCK` at a time: this kernel's
    and the readout of an ALIF layer's kernel (:func:`.alif.alif_kernel`) alike."""
    blocks(nO, integrate, events)


def li_kernel(*, dims: dict, finite_weights: bool, outputs: frozenset | None = None):
    """``dims`` is unused (shapes stay symbolic); ``Y`` and ``final_y`` are always written (the
    state lives in ``final_y``), so ``outputs`` changes nothing."""
    return _kernel(bool(finite_weights))


@functools.cache
def _kernel(skip: bool):
    """The kernel, built once per process for each ``skip`` (every row visited when False)."""

    @T.prim_func(private=True)
    def li(x: T.handle, wt: T.handle, alpha: T.handle, bias: T.handle, y0: T.handle, yo: T.handle, fy: T.handle):
        T.func_attr({"tirx.noalias": True})
        nT = T.int64()
        nB = T.int64()
        nI = T.int64()
        nO = T.int64()
        X = T.match_buffer(x, (nT, nB, nI), "float32")
        WoT = T.match_buffer(wt, (nI, nO), "float32")
        AlphaO = T.match_buffer(alpha, (nO,), "float32")
        BiasO = T.match_buffer(bias, (nO,), "float32")
        Y0 = T.match_buffer(y0, (nB, nO), "float32")
        Y = T.match_buffer(yo, (nT, nB, nO), "float32")
        FY = T.match_buffer(fy, (nB, nO), "float32")
        ev = T.alloc_buffer((nI,), "int32")
        n_ev = T.alloc_buffer((1,), "int32")
        acc = T.alloc_buffer((BLOCK,), "float32")
        for b in range(nB):
            for t in range(nT):
                gather(X, (t, b), nI, skip, ev, n_ev)
                readout(nO, Events(n_ev[0], lambda e, o: X[t, b, ev[e]] * WoT[ev[e], o]))

    return li
