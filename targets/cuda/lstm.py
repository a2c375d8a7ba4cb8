"""ONNX LSTM (forward, default activations) for NVIDIA GPUs: one launch per call.

One block per sequence, one thread per gate row (``4H`` threads, so ``H <= 256``).
Per step, thread ``j`` sums its gate: the bias, the rows of ``W^T`` for nonzero
inputs, and ``h[k] * R^T[k, j]`` over the previous ``h`` (in shared memory); a
barrier; then thread ``k < H`` updates ``c[k]`` (kept in its register) and
``h[k]``. ``R^T`` (``4H*H*4`` bytes, 256 KiB at H = 128) stays in global memory
and L2: the general path; it does not fit in shared memory. tanh and sigmoid
are :mod:`lsnn.targets.cpu.fastmath`, the same function on every target (NaN
passes through them); NaN and Inf inputs are never skipped. Outputs the
graph does not read (``outputs``) are not stored.
"""
from __future__ import annotations

from ..base import TargetError
from ..cpu import fastmath
from ..cpu.floatops import nonzero
from ..cpu.lstm import OUTPUTS
from ..tvmscript import T

MAX_HIDDEN = 256


def lstm_kernel(*, dims: dict, outputs=OUTPUTS):
    """``Y``, ``Y_h`` and ``Y_c`` are stored only when in ``outputs`` (read by the graph)."""
    store_y, store_h, store_c = ("Y" in outputs), ("Y_h" in outputs), ("Y_c" in outputs)
    if not dims:
        raise TargetError("the CUDA LSTM kernel needs the layer's sizes (constant weights)")
    nI, nH = dims["I"], dims["H"]
    if nH > MAX_HIDDEN:
        raise TargetError(f"the CUDA LSTM kernel takes at most {MAX_HIDDEN} hidden units, not {nH}")
    nG = 4 * nH
    NT = (nG + 31) // 32 * 32

    @T.prim_func(private=True)
    def lstm(x: T.handle, wt: T.handle, rt: T.handle, bias: T.handle, h0: T.handle, c0: T.handle,
             yo: T.handle, fh: T.handle, fc: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        nT = T.int64()
        nB = T.int64()
        X = T.match_buffer(x, (nT, nB, nI), "float32")
        WT = T.match_buffer(wt, (nI, nG), "float32")
        RT = T.match_buffer(rt, (nH, nG), "float32")
        Bias = T.match_buffer(bias, (nG,), "float32")
        H0 = T.match_buffer(h0, (nB, nH), "float32")
        C0 = T.match_buffer(c0, (nB, nH), "float32")
        Y = T.match_buffer(yo, (nT, nB, nH), "float32")
        FH = T.match_buffer(fh, (nB, nH), "float32")
        FC = T.match_buffer(fc, (nB, nH), "float32")
        for b in T.thread_binding(nB, thread="blockIdx.x"):
            for tx in T.thread_binding(NT, thread="threadIdx.x"):
                hs = T.alloc_buffer((nH,), "float32", scope="shared")
                gs = T.alloc_buffer((nG,), "float32", scope="shared")
                c = T.alloc_buffer((1,), "float32", scope="local")
                acc = T.alloc_buffer((1,), "float32", scope="local")
                if tx < nH:
                    hs[tx] = H0[b, tx]
                    c[0] = C0[b, tx]
                T.tvm_storage_sync("shared")
                for t in range(nT):
                    if tx < nG:
                        acc[0] = Bias[tx]
                        for i in range(nI):
                            if nonzero(X[t, b, i]):
                                acc[0] = acc[0] + X[t, b, i] * WT[i, tx]
                        for k in range(nH):
                            acc[0] = acc[0] + hs[k] * RT[k, tx]
                        gs[tx] = acc[0]
                    T.tvm_storage_sync("shared")
                    if tx < nH:
                        c[0] = fastmath.sigmoid(gs[nH * 2 + tx]) * c[0] + \
                            fastmath.sigmoid(gs[tx]) * fastmath.tanh(gs[nH * 3 + tx])
                        hs[tx] = fastmath.sigmoid(gs[nH + tx]) * fastmath.tanh(c[0])
                        if store_y:
                            Y[t, b, tx] = hs[tx]
                    T.tvm_storage_sync("shared")
                if tx < nH:
                    if store_h:
                        FH[b, tx] = hs[tx]
                    if store_c:
                        FC[b, tx] = c[0]

    return lstm
