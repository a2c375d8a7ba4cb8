"""ai.lsnn::LI for NVIDIA GPUs: one launch per call, one block per sequence, one thread per output.

Each thread keeps its readout ``y`` in a register over all T steps and
accumulates the rows of ``W^T`` for the nonzero inputs (block-uniform branch; NaN
and Inf count as nonzero), or every row when the weights are not known finite.
"""
from __future__ import annotations

from ..base import TargetError
from ..cpu.floatops import nonzero
from ..tvmscript import T
from .alif import threads_for


def li_kernel(*, dims: dict, finite_weights: bool, outputs: frozenset):
    """``outputs``: the node's outputs the graph reads (``final_y`` is stored only then)."""
    if not dims or not isinstance(dims.get("O"), int) or not isinstance(dims.get("I"), int):
        raise TargetError("the CUDA LI kernel needs the layer's sizes (constant weights)")
    nI, nO = dims["I"], dims["O"]
    NT = threads_for(nO)
    J = (nO + NT - 1) // NT
    skip = bool(finite_weights)
    store_final = "final_y" in outputs

    @T.prim_func(private=True)
    def li(x: T.handle, wt: T.handle, alpha: T.handle, bias: T.handle, y0: T.handle, yo: T.handle, fy: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        nT = T.int64()
        nB = T.int64()
        X = T.match_buffer(x, (nT, nB, nI), "float32")
        WT = T.match_buffer(wt, (nI, nO), "float32")
        Alpha = T.match_buffer(alpha, (nO,), "float32")
        Bias = T.match_buffer(bias, (nO,), "float32")
        Y0 = T.match_buffer(y0, (nB, nO), "float32")
        Y = T.match_buffer(yo, (nT, nB, nO), "float32")
        FY = T.match_buffer(fy, (nB, nO), "float32")
        for b in T.thread_binding(nB, thread="blockIdx.x"):
            for tx in T.thread_binding(NT, thread="threadIdx.x"):
                y = T.alloc_buffer((J,), "float32", scope="local")
                acc = T.alloc_buffer((1,), "float32", scope="local")
                for j in range(J):
                    if j * NT + tx < nO:
                        y[j] = Y0[b, j * NT + tx]
                for t in range(nT):
                    for j in range(J):
                        if j * NT + tx < nO:
                            o = j * NT + tx
                            acc[0] = T.float32(0)
                            for i in range(nI):
                                if not skip or nonzero(X[t, b, i]):
                                    acc[0] = acc[0] + X[t, b, i] * WT[i, o]
                            y[j] = Alpha[o] * y[j] + (T.float32(1) - Alpha[o]) * (acc[0] + Bias[o])
                            Y[t, b, o] = y[j]
                if store_final:
                    for j in range(J):
                        if j * NT + tx < nO:
                            FY[b, j * NT + tx] = y[j]

    return li
