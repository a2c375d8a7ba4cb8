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

from tvm.script import tirx as T

from .events import BLOCK, gather


def li_kernel(*, dims: dict, finite_weights: bool, outputs: frozenset | None = None):
    """``dims`` is unused (shapes stay symbolic); ``Y`` and ``final_y`` are always written (the
    state lives in ``final_y``), so ``outputs`` changes nothing."""
    skip = bool(finite_weights)

    @T.macro(hygienic=False)
    def integrate(o0, width):
        """Outputs ``o0 .. o0 + width - 1`` of step ``t``."""
        for j in T.unroll(width):
            acc[j] = T.float32(0)
        for e in range(n_ev[0]):
            for j in T.unroll(width):
                acc[j] = acc[j] + X[t, b, ev[e]] * WT[ev[e], o0 + j]
        for j in T.unroll(width):
            y = T.bind(Alpha[o0 + j] * T.if_then_else(t == 0, Y0[b, o0 + j], FY[b, o0 + j])
                       + (T.float32(1) - Alpha[o0 + j]) * (acc[j] + Bias[o0 + j]))
            Y[t, b, o0 + j] = y
            FY[b, o0 + j] = y

    @T.prim_func(private=True)
    def li(x: T.handle, wt: T.handle, alpha: T.handle, bias: T.handle, y0: T.handle, yo: T.handle, fy: T.handle):
        T.func_attr({"tirx.noalias": True})
        nT = T.int64()
        nB = T.int64()
        nI = T.int64()
        nO = T.int64()
        X = T.match_buffer(x, (nT, nB, nI), "float32")
        WT = T.match_buffer(wt, (nI, nO), "float32")
        Alpha = T.match_buffer(alpha, (nO,), "float32")
        Bias = T.match_buffer(bias, (nO,), "float32")
        Y0 = T.match_buffer(y0, (nB, nO), "float32")
        Y = T.match_buffer(yo, (nT, nB, nO), "float32")
        FY = T.match_buffer(fy, (nB, nO), "float32")
        ev = T.alloc_buffer((nI,), "int32")
        n_ev = T.alloc_buffer((1,), "int32")
        acc = T.alloc_buffer((BLOCK,), "float32")
        for b in range(nB):
            for t in range(nT):
                gather(X, (t, b), nI, skip, ev, n_ev)
                for ob in range(nO // BLOCK):
                    integrate(ob * BLOCK, BLOCK)
                for o in range(nO % BLOCK):
                    integrate(nO // BLOCK * BLOCK + o, 1)

    return li
