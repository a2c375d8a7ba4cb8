"""ONNX LSTM (forward, default activations) for CPUs: the time loop inside.

Gates in ONNX order (i, o, f, c). Per step: the input projection over the
nonzero inputs only (rows of ``W^T``), the recurrent product as rows of
``R^T`` scaled by each ``h[k]`` (contiguous, vectorisable), then
``c = f*c + i*g``, ``h = o*tanh(c)`` with vectorisable rational tanh and
sigmoid (:mod:`.fastmath`; libm calls would dominate the time). ``bias`` is
``Wb + Rb``.

``vector=True`` register-blocks the recurrent product (``BLOCK`` gate sums in
vector registers over all ``k``); ``vector=False`` accumulates the rows of the
nonzero ``h[k]`` one by one, the form for targets whose code generator cannot
print vector types (TVM's C, for Cortex-M). Skipping zero inputs and zero
``h[k]`` is exact: the importer takes LSTM weights only as constants, checked
finite; NaN and Inf are never skipped (:func:`.floatops.nonzero`).
"""
from __future__ import annotations

from tvm.script import tirx as T

from . import fastmath
from .floatops import nonzero


BLOCK = 128  # gate sums per block: 16 AVX2 vectors, accumulated over all k before one store


def lstm_kernel(*, dims: dict, vector: bool):
    """``dims`` (the static sizes) is unused: shapes stay symbolic."""
    blocked = bool(vector)

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
                if blocked:
                    # recurrent product, register-blocked: BLOCK gate sums stay in vector
                    # registers over all k, one contiguous row slice of R^T per FMA
                    acc = T.alloc_buffer((BLOCK,), "float32", scope="local")
                    for jo in range(nG // BLOCK):
                        for ji in T.vectorized(BLOCK):
                            acc[ji] = g[jo * BLOCK + ji]
                        for k in range(nH):
                            for ji in T.vectorized(BLOCK):
                                acc[ji] = acc[ji] + h[k] * RT[k, jo * BLOCK + ji]
                        for ji in T.vectorized(BLOCK):
                            g[jo * BLOCK + ji] = acc[ji]
                    for j in range(nG // BLOCK * BLOCK, nG):  # the rest, when 4H % BLOCK != 0
                        for k in range(nH):
                            g[j] = g[j] + h[k] * RT[k, j]
                else:
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
