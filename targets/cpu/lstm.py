"""ONNX LSTM (forward, default activations) for CPUs: the time loop inside.

Gates in ONNX order (i, o, f, c). Per step: the input projection over the
nonzero inputs only (rows of ``W^T``), the recurrent product as rows of
``R^T`` scaled by each ``h[k]`` (contiguous, vectorisable), then
``c = f*c + i*g``, ``h = o*tanh(c)``. ``bias`` is ``Wb + Rb``.
"""
from __future__ import annotations

from tvm.script import tirx as T


def lstm_kernel():
    @T.prim_func(private=True)
    def lstm(x: T.handle, wt: T.handle, rt: T.handle, bias: T.handle, h0: T.handle, c0: T.handle,
             yo: T.handle, fh: T.handle, fc: T.handle):
        T.func_attr({"tirx.noalias": True})
        nT = T.int64()
        nB = T.int64()
        nI = T.int64()
        nH = T.int64()
        X = T.match_buffer(x, (nT, nB, nI), "float32")
        WT = T.match_buffer(wt, (nI, nH * 4), "float32")
        RT = T.match_buffer(rt, (nH, nH * 4), "float32")
        Bias = T.match_buffer(bias, (nH * 4,), "float32")
        H0 = T.match_buffer(h0, (nB, nH), "float32")
        C0 = T.match_buffer(c0, (nB, nH), "float32")
        Y = T.match_buffer(yo, (nT, nB, nH), "float32")
        FH = T.match_buffer(fh, (nB, nH), "float32")
        FC = T.match_buffer(fc, (nB, nH), "float32")
        h = T.alloc_buffer((nH,), "float32")
        c = T.alloc_buffer((nH,), "float32")
        g = T.alloc_buffer((nH * 4,), "float32")
        for b in range(nB):
            for k in range(nH):
                h[k] = H0[b, k]
                c[k] = C0[b, k]
            for t in range(nT):
                for j in range(nH * 4):
                    g[j] = Bias[j]
                for i in range(nI):
                    if X[t, b, i] != T.float32(0):
                        for j in range(nH * 4):
                            g[j] = g[j] + X[t, b, i] * WT[i, j]
                for k in range(nH):
                    for j in range(nH * 4):
                        g[j] = g[j] + h[k] * RT[k, j]
                for k in range(nH):
                    gi = T.sigmoid(g[k])
                    go = T.sigmoid(g[nH + k])
                    gf = T.sigmoid(g[nH * 2 + k])
                    gc = T.tanh(g[nH * 3 + k])
                    c[k] = gf * c[k] + gi * gc
                    h[k] = go * T.tanh(c[k])
                    Y[t, b, k] = h[k]
            for k in range(nH):
                FH[b, k] = h[k]
                FC[b, k] = c[k]

    return lstm
