"""ONNX LSTM, GRU and RNN in general for NVIDIA GPUs: one direction per launch, the time loop inside.

The general form of the recurrent kernels (:class:`lsnn.targets.cells.Cell` says what it computes
and lists its arguments): any activations, ``clip``, reverse direction, ``sequence_lens``,
peepholes, coupled input and forget gates, GRU's two forms, weights given at run time. The plain
forward LSTM with constant weights keeps its own kernel (:mod:`.lstm`).

One block per sequence, one thread per gate column (``gates * H`` threads, at most
:data:`MAX_THREADS`). Per step, thread ``j`` sums its column of the input projection
``Wb + X[t] @ W^T`` (the rows of ``W^T`` of nonzero inputs only when the weights are finite
constants, as on the CPU) and of the recurrent product ``Rb + h @ R^T`` over ``h`` in shared
memory; a barrier; then thread ``k < H`` updates unit ``k`` with the CPU kernel's own cell
(:class:`lsnn.targets.cpu.recurrent.Units`: the same expressions, the same activations). The
GRU without ``linear_before_reset`` takes one more barrier: ``r * h`` first, then its product
with ``R_h^T``. Sequence ``b`` runs steps ``0 .. lens[b]-1`` (backwards with ``reverse``), ``Y``
is 0 past its length; ``Y``, ``Y_h`` and ``Y_c`` are stored only when read (``outputs``).
"""
from __future__ import annotations

from ..base import TargetError
from ..cells import Cell
from ..cpu.floatops import nonzero
from ..cpu.recurrent import OUTPUTS, Units
from ..tvmscript import T

#: threads per block: one per gate column
MAX_THREADS = 1024


def recurrent_kernel(*, dims: dict, cell: Cell, outputs=OUTPUTS):
    """The kernel of one direction of ``cell`` for ``dims`` (``I``, ``H``: static), storing only
    ``outputs``."""
    unknown = set(outputs) - OUTPUTS
    if unknown:
        raise ValueError(f"{cell.op} kernel: unknown output(s) {sorted(unknown)} (it has {sorted(OUTPUTS)})")
    nI, nH = int(dims["I"]), int(dims["H"])
    if cell.gates * nH > MAX_THREADS:
        raise TargetError(f"the CUDA {cell.op} kernel runs one thread per gate column: at most "
                          f"{MAX_THREADS // cell.gates} hidden units, not {nH}")
    return _kernel(nI, nH, cell, store_y="Y" in outputs, store_h="Y_h" in outputs,
                   store_c="Y_c" in outputs and cell.op == "LSTM")


def _kernel(nI: int, nH: int, cell: Cell, store_y: bool, store_h: bool, store_c: bool):
    nG = cell.gates * nH
    NT = (nG + 31) // 32 * 32
    units = Units(cell, nH)
    first, last = units.first, units.last
    adds_q, needs_q2 = units.adds_q, units.needs_q2
    nQ = units.rec_gates * nH
    events = cell.finite_weights

    time = units.time

    @T.prim_func(private=True)
    def recurrent(x: T.handle, wt: T.handle, rt: T.handle, bias: T.handle, lens: T.handle, p: T.handle,
                  h0: T.handle, c0: T.handle, yo: T.handle, fh: T.handle, fc: T.handle):
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        nT = T.int64()
        nB = T.int64()
        X = T.match_buffer(x, (nT, nB, nI), "float32")
        WT = T.match_buffer(wt, (nI, nG), "float32")
        RT = T.match_buffer(rt, (nH, nG), "float32")
        Bias = T.match_buffer(bias, (2, nG), "float32")
        Lens = T.match_buffer(lens, (nB,), "float32")
        P = T.match_buffer(p, (nH * 3,), "float32")
        H0 = T.match_buffer(h0, (nB, nH), "float32")
        C0 = T.match_buffer(c0, (nB, nH), "float32")
        Y = T.match_buffer(yo, (nT, nB, nH), "float32")
        FH = T.match_buffer(fh, (nB, nH), "float32")
        FC = T.match_buffer(fc, (nB, nH), "float32")
        for b in T.thread_binding(nB, thread="blockIdx.x"):
            for tx in T.thread_binding(NT, thread="threadIdx.x"):
                hs = T.alloc_buffer((nH,), "float32", scope="shared")
                cs = T.alloc_buffer((nH,), "float32", scope="shared")
                G = T.alloc_buffer((nG,), "float32", scope="shared")
                Q = T.alloc_buffer((nG,), "float32", scope="shared")
                Q2 = T.alloc_buffer((nH,), "float32", scope="shared")
                n = T.alloc_buffer((1,), "int64", scope="local")
                n[0] = units.steps(Lens, b, nT)
                if tx < nH:
                    hs[tx] = H0[b, tx]
                    cs[tx] = C0[b, tx]
                T.tvm_storage_sync("shared")
                for s in range(n[0]):
                    if tx < nG:
                        G[tx] = Bias[0, tx]
                        for i in range(nI):
                            if events:
                                if nonzero(X[time(n[0], s), b, i]):
                                    G[tx] = G[tx] + X[time(n[0], s), b, i] * WT[i, tx]
                            else:
                                G[tx] = G[tx] + X[time(n[0], s), b, i] * WT[i, tx]
                        if tx < nQ:
                            Q[tx] = Bias[1, tx]
                            for k in range(nH):
                                Q[tx] = Q[tx] + hs[k] * RT[k, tx]
                            if adds_q:
                                G[tx] = G[tx] + Q[tx]
                    T.tvm_storage_sync("shared")
                    if needs_q2:
                        if tx < nH:
                            first(G, Q, hs, cs, tx)
                        T.tvm_storage_sync("shared")
                        if tx < nH:
                            Q2[tx] = Bias[1, nH * 2 + tx]
                            for k in range(nH):
                                Q2[tx] = Q2[tx] + cs[k] * RT[k, nH * 2 + tx]
                    if tx < nH:
                        last(G, Q, Q2, hs, cs, P, tx)
                        if store_y:
                            Y[time(n[0], s), b, tx] = hs[tx]
                    T.tvm_storage_sync("shared")
                if tx < nH:
                    if store_y:
                        for t in range(n[0], nT):
                            Y[t, b, tx] = T.float32(0)
                    if store_h:
                        FH[b, tx] = hs[tx]
                    if store_c:
                        FC[b, tx] = cs[tx]

    return recurrent
