"""ai.lsnn::LI for CPUs: the time loop inside, event-driven input (zeros skipped).

``y = alpha * y + (1 - alpha) * (X[t] @ W^T + bias)``, the weight rows of
nonzero inputs (NaN and Inf included) accumulated as contiguous rows of
``W^T``; every row when the weights are not known to be finite (``0 * inf``).
"""
from __future__ import annotations

from tvm.script import tirx as T

from .floatops import nonzero


def li_kernel(*, dims: dict, finite_weights: bool):
    """``dims`` (the static sizes) is unused: shapes stay symbolic."""
    skip = bool(finite_weights)

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
        y = T.alloc_buffer((nO,), "float32")
        acc = T.alloc_buffer((nO,), "float32")
        for b in range(nB):
            for o in range(nO):
                y[o] = Y0[b, o]
            for t in range(nT):
                for o in range(nO):
                    acc[o] = T.float32(0)
                for i in range(nI):
                    if not skip or nonzero(X[t, b, i]):
                        for o in range(nO):
                            acc[o] = acc[o] + X[t, b, i] * WT[i, o]
                for o in range(nO):
                    y[o] = Alpha[o] * y[o] + (T.float32(1) - Alpha[o]) * (acc[o] + Bias[o])
                    Y[t, b, o] = y[o]
            for o in range(nO):
                FY[b, o] = y[o]

    return li
