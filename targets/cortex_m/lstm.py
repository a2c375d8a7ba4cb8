"""ONNX LSTM (forward, default activations) for Cortex-M: a TIR kernel for TVM's C output.

Gates in ONNX order (i, o, f, c); ``bias`` is ``Wb + Rb``. Per step: the input
projection over the nonzero inputs only (rows of ``W^T``), the recurrent
product as the rows of ``R^T`` of the nonzero ``h[k]``, each scaled by
``h[k]`` (contiguous loops that GCC turns into FPU or Helium code), then
``c = f*c + i*g``, ``h = o*tanh(c)`` with the rational tanh and sigmoid of
:mod:`..cpu.fastmath` (no libm calls). Skipping zeros is exact: the importer
takes LSTM weights only as constants, checked finite; NaN and Inf are never
skipped. Its own kernel, not the CPU target's: TVM's C code generator prints
no vector types or parallel loops, and the microcontroller runs one step per
call.
"""
from __future__ import annotations

from ..cpu import fastmath
from ..cpu.floatops import nonzero
from ..tvmscript import T


def lstm_kernel(*, dims: dict, outputs: frozenset | None = None):
    """``dims`` is unused (shapes stay symbolic); ``Y``, ``Y_h`` and ``Y_c`` are always written
    (the state lives in the last two), so ``outputs`` changes nothing."""

    @T.prim_func(private=True)
    def lstm(x: T.handle, wt: T.handle, rt: T.handle, bias: T.handle, h0: T.handle, c0: T.handle,
             yo: T.handle, fh: T.handle, fc: T.handle):
        T.func_attr({"tirx.noalias": True})
        nT = T.int64()
        nB = T.int64()
        nI = T.int64()
        nH = T.int64()
        nG = T.int64()  # 4 * nH, its own variable so that shapes specialise per call site
        X = T.match_buffer(x, (nT, nB, nI), "float32")
        WT = T.match_buffer(wt, (nI, nG), "float32")
        RT = T.match_buffer(rt, (nH, nG), "float32")
        Bias = T.match_buffer(bias, (nG,), "float32")
        H0 = T.match_buffer(h0, (nB, nH), "float32")
        C0 = T.match_buffer(c0, (nB, nH), "float32")
        Y = T.match_buffer(yo, (nT, nB, nH), "float32")
        FH = T.match_buffer(fh, (nB, nH), "float32")
        FC = T.match_buffer(fc, (nB, nH), "float32")
        h = T.alloc_buffer((nH,), "float32")
        c = T.alloc_buffer((nH,), "float32")
        g = T.alloc_buffer((nG,), "float32")
        for b in range(nB):
            for k in range(nH):
                h[k] = H0[b, k]
                c[k] = C0[b, k]
            for t in range(nT):
                for j in range(nG):
                    g[j] = Bias[j]
                for i in range(nI):
                    if nonzero(X[t, b, i]):
                        for j in range(nG):
                            g[j] = g[j] + X[t, b, i] * WT[i, j]
                for k in range(nH):
                    if nonzero(h[k]):
                        for j in range(nG):
                            g[j] = g[j] + h[k] * RT[k, j]
                for k in range(nH):
                    # no named temporaries: TIR would give each scalar its own allocation
                    c[k] = fastmath.sigmoid(g[nH * 2 + k]) * c[k] + fastmath.sigmoid(g[k]) * fastmath.tanh(g[nH * 3 + k])
                    h[k] = fastmath.sigmoid(g[nH + k]) * fastmath.tanh(c[k])
                    Y[t, b, k] = h[k]
            for k in range(nH):
                FH[b, k] = h[k]
                FC[b, k] = c[k]

    return lstm
