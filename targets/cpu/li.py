"""ai.lsnn::LI for CPUs: the time loop inside, event-driven input (zeros skipped).

``y = alpha * y + (1 - alpha) * (X[t] @ W^T + bias)``. Each step lists the
nonzero inputs once, branch-free (its inputs are usually an ALIF layer's
spikes: a few per step), and accumulates their rows of ``W^T`` only, as vector
code (:mod:`.tirtools`); NaN and Inf inputs count as events; every row is
visited when the weights are not known to be finite (``0 * inf``). ``Y`` is
always written, ``final_y`` only when the graph reads it (``outputs``);
``parallel`` hands the batch's sequences to the runtime's threads (:func:`.worklist.each`).
"""
from __future__ import annotations

from ..tvmscript import T
from .tirtools import event_list, over, prefetch, size
from .worklist import each


@T.macro
def leak(y, o, drive, alpha, bias):
    """``y[o] = alpha * y[o] + (1 - alpha) * (drive[o] + bias)``: the LI update of output ``o``,
    for this kernel and the readout of :func:`.alif.alif_kernel` alike."""
    y[o] = alpha[o] * y[o] + (T.float32(1) - alpha[o]) * (drive[o] + bias[o])


def li_kernel(*, dims: dict, finite_weights: bool, outputs: frozenset, lanes: int = 1, parallel: bool = False,
              ahead: int = 0):
    """``dims`` (the static sizes) is unused: shapes stay symbolic. ``lanes`` and ``parallel``
    as for :func:`.alif.alif_kernel`."""
    skip = bool(finite_weights)
    store_final = "final_y" in outputs

    @T.macro(hygienic=False)
    def load_state(h):
        y[h] = Y0[b, h]

    @T.macro(hygienic=False)
    def clear_sum(h):
        acc[h] = T.float32(0)

    @T.macro(hygienic=False)
    def add_input_row(h):
        acc[h] = acc[h] + xi * WT[i, h]

    @T.macro(hygienic=False)
    def update(h):
        leak(y, h, acc, Alpha, Bias)
        Y[t, b, h] = y[h]

    @T.macro(hygienic=False)
    def store_state(h, store_final=store_final):
        if store_final:
            FY[b, h] = y[h]

    @T.macro
    def sequence(b, X, WT, Alpha, Bias, Y0, Y, FY):
        """Sequence ``b`` of the batch, with its state in an ``O``-long buffer."""
        nT, _, nI = T.meta_var(X.shape)
        nO = T.meta_var(WT.shape[1])
        y = T.alloc_buffer((nO,), "float32")
        acc = T.alloc_buffer((nO,), "float32")
        inputs = T.alloc_buffer((nI,), "int32")
        n_in = T.alloc_buffer((1,), "int32")
        over(nO, lanes, load_state)
        for t in range(nT):
            if ahead > 0:
                if t + ahead < nT:
                    prefetch(lambda q: X[t + ahead, b, q], nI, 0)
            event_list(inputs, n_in, nI, lambda q: X[t, b, q], skip, lanes)
            over(nO, lanes, clear_sum)
            for e in range(n_in[0]):
                i = T.Cast("int64", inputs[e])
                xi = X[t, b, i]
                over(nO, lanes, add_input_row)
            over(nO, lanes, update)
        over(nO, lanes, store_state)

    @T.prim_func(private=True)
    def li(x: T.handle, wt: T.handle, alpha: T.handle, bias: T.handle, y0: T.handle, yo: T.handle, fy: T.handle):
        T.func_attr({"tirx.noalias": True})
        nT = T.int64()
        nB = T.int64()
        nI = T.meta_var(size(dims, "I"))
        nO = T.meta_var(size(dims, "O"))
        X = T.match_buffer(x, (nT, nB, nI), "float32")
        WT = T.match_buffer(wt, (nI, nO), "float32")
        Alpha = T.match_buffer(alpha, (nO,), "float32")
        Bias = T.match_buffer(bias, (nO,), "float32")
        Y0 = T.match_buffer(y0, (nB, nO), "float32")
        Y = T.match_buffer(yo, (nT, nB, nO), "float32")
        FY = T.match_buffer(fy, (nB, nO), "float32")
        each(nB, parallel, lambda b: sequence(b, X, WT, Alpha, Bias, Y0, Y, FY))

    return li
