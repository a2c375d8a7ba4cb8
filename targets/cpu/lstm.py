"""ONNX LSTM (forward, default activations) for CPUs: the time loop inside.

Gates in ONNX order (i, o, f, c); ``bias`` is ``Wb + Rb``. The batch is cut
into groups of at most ``GROUP`` sequences, each an item of the batch's
work list (:func:`.worklist.each`); a group runs its whole sequence, so
threads never wait for each other. Within a group, time is cut into chunks of
``ROWS // group size`` steps, and each chunk:

1. counts its nonzero inputs (a test of the bits, :func:`.floatops.nonzero`),
   and writes the input projection ``bias + X[t] @ W^T`` of all its steps and
   sequences into ``P`` either as one blocked matrix product (inputs that are
   not sparse: more than one in ``DENSE_FRACTION`` nonzero) or as the sum of
   the rows of ``W^T`` of the nonzero inputs only (spikes: event-driven);
2. per step, and per block of ``units`` hidden units, computes the four gates of those units,
   ``P + h @ R^T``, as one blocked product for the whole group (``R^T`` read once per step and
   group, in order: the kernel takes it blocked, :func:`recurrent_layout`; a tile of
   ``gate_rows`` sequences by the block's four gate columns keeps its sums in registers over all
   ``k``), and from those registers, at once, ``c = f*c + i*g``,
   ``h = o*tanh(c)`` with the rational tanh and sigmoid of :mod:`.fastmath` (libm calls would
   dominate the time). The cell's arithmetic overlaps the next block's reads of ``R^T``; at
   batch 1 those reads (256 KiB per step at ``H = 128``) from L2 are the kernel's floor. The new
   ``h`` goes to the other half of a two-step buffer, as every block reads the old one.

Both projections add the same terms in the same order (bias, then inputs by
index, then ``h[k]`` by index); skipping a zero input is exact because the
importer takes LSTM weights only as finite constants, and NaN and Inf inputs
are never skipped. ``Y`` and the final states are stored only when the graph
reads them (``outputs``); the buffer of a dead one is left as it is.

``vector=False`` is the form for code generators that print no vector types or
parallel loops (TVM's C): the same loops, serial, one sequence and one step per
chunk, tiles of one row of at most eight sums.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tvmscript import T
from . import fastmath
from .floatops import nonzero
from .matmul import padded, product_rows, tile_cols
from .worklist import each

#: the LSTM's outputs (ONNX names, as in the op schema)
OUTPUTS = frozenset({"Y", "Y_h", "Y_c"})
#: a chunk of inputs with more than one nonzero in this many takes the dense projection
DENSE_FRACTION = 4


@dataclass(frozen=True)
class Blocking:
    """Sizes of the blocked loops (all static)."""
    group: int       # sequences per parallel task
    rows: int        # rows (step x sequence) of P per chunk
    tile_rows: int   # register tile of the dense input projection: tile_rows x tile_cols sums
    tile_cols: int
    row_cols: int    # its single row's tile (a chunk's last steps): row_cols sums
    units: int       # a step's tile: gate_rows x 4 gates x units sums, then the cell of those units
    gate_rows: int   # (a group's last rows, and batch 1, in tiles of one row)
    vector: bool

    @classmethod
    def for_target(cls, vector: bool, lanes: int, n_gates: int) -> "Blocking":
        """Half the vector registers hold a tile's sums (x86: 16 registers, 32 with AVX-512's
        16 lanes), the rest the row of ``B`` and the broadcast values."""
        if not vector:
            return cls(group=1, rows=1, tile_rows=1, tile_cols=_divisor(n_gates, 8), row_cols=_divisor(n_gates, 8),
                       units=_divisor(n_gates // 4, 2), gate_rows=1, vector=False)
        registers = 32 if lanes >= 16 else 16
        return cls(group=GROUP, rows=ROWS, tile_rows=TILE_ROWS,
                   tile_cols=_divisor(n_gates, lanes * registers // 2 // TILE_ROWS),
                   row_cols=_divisor(n_gates, ROW_COLS), units=_divisor(n_gates // 4, lanes),
                   gate_rows=registers // 2 // 4, vector=True)


GROUP = 8        # sequences per task: R^T is read from L2 once per step for these
ROWS = 64        # P rows per chunk: 128 KiB at H = 128, W^T read once per chunk
TILE_ROWS = 4
ROW_COLS = 64    # 8 AVX2 (4 AVX-512) sums: enough independent FMA chains to hide their latency


def _divisor(n: int, most: int) -> int:
    """The largest of ``most``, ``most / 2``, ... that divides ``n`` (``n`` is a multiple of 4)."""
    d = most
    while n % d:
        d //= 2
    return d


def lstm_kernel(*, dims: dict, vector: bool, outputs=OUTPUTS, lanes: int = 8):
    """The kernel for ``dims`` (``I``, ``H``: static), storing only ``outputs``; ``lanes``: float32
    lanes of the target's vector registers (8: AVX2, 16: AVX-512), which size the register tiles.
    With ``O`` in ``dims`` (static), the kernel of ``LSTM+Readout``: it also takes the readout's
    ``W^T [H, O]`` and bias ``[O]`` and gives ``h_t W^T + bias`` of every step, ``[T, B, O]``.
    Arguments as :mod:`lsnn.targets.cells` gives them, but ``R^T`` in :func:`recurrent_layout`."""
    unknown = set(outputs) - OUTPUTS
    if unknown:
        raise ValueError(f"LSTM kernel: unknown output(s) {sorted(unknown)} (it has {sorted(OUTPUTS)})")
    nH = int(dims["H"])
    nO = int(dims["O"]) if dims.get("O") is not None else None
    return _kernel(int(dims["I"]), nH, nO, Blocking.for_target(bool(vector), int(lanes), 4 * nH), int(lanes),
                   store_y="Y" in outputs, store_h="Y_h" in outputs, store_c="Y_c" in outputs)


def recurrent_layout(rt: np.ndarray, *, vector: bool, lanes: int = 8) -> np.ndarray:
    """``R^T [H, 4H]`` as the kernel of the same ``vector`` and ``lanes`` takes it,
    ``[H / units, H, 4, units]``: element ``[u, k, g, j]`` is ``R^T[k, g*H + u*units + j]``, so a
    block of units reads its four gates' columns over all ``k`` as one contiguous run. Read from
    ``[H, 4H]``, those are four lines per row, rows 2 KiB apart at ``H = 128``: an Intel core's
    prefetchers do not follow that, and a batch-1 sequence took 2.5x as long."""
    nH, nG = rt.shape
    units = Blocking.for_target(vector, lanes, nG).units
    return np.ascontiguousarray(rt.reshape(nH, 4, nH // units, units).transpose(2, 0, 1, 3))


def _kernel(nI: int, nH: int, nO: int | None, blk: Blocking, lanes: int, store_y: bool, store_h: bool,
            store_c: bool):
    nG = 4 * nH
    GB, ROWS_, RB, CB, CB1 = blk.group, blk.rows, blk.tile_rows, blk.tile_cols, blk.row_cols
    UB, GR = blk.units, blk.gate_rows
    vec = T.vectorized if blk.vector else T.serial
    fused = nO is not None
    out_lanes = lanes if blk.vector else 1
    nOP = padded(nO, tile_cols(nO, out_lanes)) if fused else 1  # the readout's columns, padded
    readout_rows = product_rows(nH, nO, out_lanes) if fused else None

    @T.macro
    def tile(Out, o0, ostride, Init, i0, istride, A, a0, astride, B, j0, nk):
        """``Out[o0 + r*ostride, j0:j0+CB] = Init[i0 + r*istride, j0:j0+CB] + A[a0 + r*astride, :nk] @ B[:nk, j0:j0+CB]``
        for ``r < RB``, the sums in registers over all ``k``."""
        acc = T.alloc_buffer((RB, CB), "float32", scope="local")
        for r in T.unroll(RB):
            for jj in vec(CB):
                acc[r, jj] = Init[i0 + r * istride, j0 + jj]
        for k in range(nk):
            for r in T.unroll(RB):
                for jj in vec(CB):
                    acc[r, jj] = acc[r, jj] + A[a0 + r * astride, k] * B[k, j0 + jj]
        for r in T.unroll(RB):
            for jj in vec(CB):
                Out[o0 + r * ostride, j0 + jj] = acc[r, jj]

    @T.macro
    def row(Out, o0, Init, i0, A, a0, B, nk):
        """:func:`tile` of one row, all columns, ``CB1`` at a time."""
        for jo in range(nG // CB1):
            acc = T.alloc_buffer((CB1,), "float32", scope="local")
            for jj in vec(CB1):
                acc[jj] = Init[i0, jo * CB1 + jj]
            for k in range(nk):
                for jj in vec(CB1):
                    acc[jj] = acc[jj] + A[a0, k] * B[k, jo * CB1 + jj]
            for jj in vec(CB1):
                Out[o0, jo * CB1 + jj] = acc[jj]

    @T.macro
    def cell(P, RT, hs, cs, Y, r0, s0, nr, u, cur, t, bg):
        """One step of block ``u`` of units (``u0 .. u0+UB``) for rows ``r0 .. r0+nr`` of ``P``
        (sequences ``s0 ..`` of the group that starts at ``bg``): the four gates' sums ``P + h @ R^T`` in registers over
        all ``k`` (``P`` first, then ``k`` in order), then ``c`` and ``h`` of those units into
        ``cs`` and ``hs[1 - cur]`` (and ``Y``, and ``P``'s input-gate columns for the readout),
        while the next block's rows of ``R^T`` stream in."""
        u0 = u * UB
        acc = T.alloc_buffer((nr, 4, UB), "float32", scope="local")
        for r in T.unroll(nr):
            for g in T.unroll(4):
                for jj in vec(UB):
                    acc[r, g, jj] = P[r0 + r, g * nH + u0 + jj]
        for k in range(nH):
            for r in T.unroll(nr):
                for g in T.unroll(4):
                    for jj in vec(UB):
                        acc[r, g, jj] = acc[r, g, jj] + hs[cur, s0 + r, k] * RT[u, k, g, jj]
        for r in T.unroll(nr):
            for jj in vec(UB):
                # no named float temporaries: TIR would give each its own allocation
                cs[s0 + r, u0 + jj] = fastmath.sigmoid(acc[r, 2, jj]) * cs[s0 + r, u0 + jj] + \
                    fastmath.sigmoid(acc[r, 0, jj]) * fastmath.tanh(acc[r, 3, jj])
                hs[1 - cur, s0 + r, u0 + jj] = fastmath.sigmoid(acc[r, 1, jj]) * fastmath.tanh(cs[s0 + r, u0 + jj])
                if store_y:
                    Y[t, bg + s0 + r, u0 + jj] = hs[1 - cur, s0 + r, u0 + jj]
                if fused:
                    P[r0 + r, u0 + jj] = hs[1 - cur, s0 + r, u0 + jj]

    @T.macro
    def group(grp, X, X2, WT, RT, Bias, Bias2, H0, C0, Y, FH, FC, Wo, Bo, Out2):
        """Group ``grp`` of the batch: its ``GROUP`` sequences (fewer in the last), all steps."""
        nT, nB, _ = T.meta_var(X.shape)
        b0 = grp * GB
        nb = T.min(T.int64(GB), nB - b0)  # sequences of this group
        steps = T.int64(ROWS_) // nb  # steps per chunk
        hs = T.alloc_buffer((2, GB, nH), "float32")  # h before and after the step, by step parity
        cs = T.alloc_buffer((GB, nH), "float32")
        P = T.alloc_buffer((ROWS_, nG), "float32")  # row tt * nb + b: projection, then gates
        cnt = T.alloc_buffer((1,), "int64", scope="local")
        for b in range(nb):
            for k in range(nH):
                hs[0, b, k] = H0[b0 + b, k]
                cs[b, k] = C0[b0 + b, k]
        for tc in range((nT + steps - 1) // steps):
            t0 = tc * steps
            nt = T.min(steps, nT - t0)
            # -- the chunk's input projection, bias included, into P
            cnt[0] = T.int64(0)
            for tt in range(nt):
                for b in range(nb):
                    for i in range(nI):
                        cnt[0] = cnt[0] + T.Cast("int64", nonzero(X[t0 + tt, b0 + b, i]))
            if cnt[0] * DENSE_FRACTION > nt * nb * nI:
                for b in range(nb):  # rows (tt, b) of one b, RB steps per tile
                    for jo in range(nG // CB):
                        for to in range(nt // RB):
                            tile(P, to * RB * nb + b, nb, Bias2, 0, 0, X2, (t0 + to * RB) * nB + b0 + b, nB,
                                 WT, jo * CB, nI)
                    for tt in range(nt // RB * RB, nt):
                        row(P, tt * nb + b, Bias2, 0, X2, (t0 + tt) * nB + b0 + b, WT, nI)
            else:
                for tt in range(nt):
                    for b in range(nb):
                        for j in range(nG):
                            P[tt * nb + b, j] = Bias[j]
                        for i in range(nI):
                            if nonzero(X[t0 + tt, b0 + b, i]):
                                for j in range(nG):
                                    P[tt * nb + b, j] = P[tt * nb + b, j] + X[t0 + tt, b0 + b, i] * WT[i, j]
            # -- the steps: per block of units, gates = P + h @ R^T in registers, then the cell
            for tt in range(nt):
                cur = (t0 + tt) % 2  # hs[cur]: h of the step before; the new h goes to hs[1 - cur]
                for u in range(nH // UB):
                    for bo in range(nb // GR):
                        cell(P, RT, hs, cs, Y, tt * nb + bo * GR, bo * GR, GR, u, cur, t0 + tt, b0)
                    for b in range(nb // GR * GR, nb):
                        cell(P, RT, hs, cs, Y, tt * nb + b, b, 1, u, cur, t0 + tt, b0)
            # -- the readout of the chunk's rows (tt, b) of one b, RB steps per tile
            if fused:
                for b in range(nb):
                    for to in range(nt // RB):
                        readout_rows(Out2, (t0 + to * RB) * nB + b0 + b, nB, P, to * RB * nb + b, nb, Wo, Bo, RB)
                    for tt in range(nt // RB * RB, nt):
                        readout_rows(Out2, (t0 + tt) * nB + b0 + b, nB, P, tt * nb + b, nb, Wo, Bo, 1)
        for b in range(nb):
            for k in range(nH):
                if store_h:
                    FH[b0 + b, k] = hs[nT % 2, b, k]
                if store_c:
                    FC[b0 + b, k] = cs[b, k]

    @T.macro
    def sequences(X, WT, RT, Bias, H0, C0, Y, FH, FC, WoT, BiasO, Out2):
        """Every group of the batch; with the readout (``fused``), ``Out = h W^T + bias`` of each
        chunk's rows after its steps (``Out2``: ``Out`` as ``[T * B, O]``), from ``h`` kept in ``P``'s first ``H`` columns (the input
        gate's, which the cell has read by then)."""
        nT, nB, _ = T.meta_var(X.shape)
        X2 = T.decl_buffer((nT * nB, nI), "float32", data=X.data)  # X[t, b] is row t * nB + b
        Bias2 = T.decl_buffer((1, nG), "float32", data=Bias.data)
        # the readout's W^T and bias, zero-padded once per call for every group (read only after)
        Wo = T.alloc_buffer((nH, nOP), "float32")
        Bo = T.alloc_buffer((nOP,), "float32")
        if fused:
            for j in range(nOP):
                Bo[j] = T.if_then_else(j < nO, BiasO[T.min(j, nO - 1)], T.float32(0))
                for k in range(nH):
                    Wo[k, j] = T.if_then_else(j < nO, WoT[k, T.min(j, nO - 1)], T.float32(0))
        each((nB + GB - 1) // GB, blk.vector,
             lambda grp: group(grp, X, X2, WT, RT, Bias, Bias2, H0, C0, Y, FH, FC, Wo, Bo, Out2))

    if not fused:
        @T.prim_func(private=True)
        def lstm(x: T.handle, wt: T.handle, rt: T.handle, bias: T.handle, h0: T.handle, c0: T.handle,
                 yo: T.handle, fh: T.handle, fc: T.handle):
            T.func_attr({"tirx.noalias": True})
            nT = T.int64()
            nB = T.int64()
            X = T.match_buffer(x, (nT, nB, nI), "float32")
            WT = T.match_buffer(wt, (nI, nG), "float32")
            RT = T.match_buffer(rt, (nH // UB, nH, 4, UB), "float32")
            Bias = T.match_buffer(bias, (nG,), "float32")
            H0 = T.match_buffer(h0, (nB, nH), "float32")
            C0 = T.match_buffer(c0, (nB, nH), "float32")
            Y = T.match_buffer(yo, (nT, nB, nH), "float32")
            FH = T.match_buffer(fh, (nB, nH), "float32")
            FC = T.match_buffer(fc, (nB, nH), "float32")
            sequences(X, WT, RT, Bias, H0, C0, Y, FH, FC, None, None, None)

        return lstm

    @T.prim_func(private=True)
    def lstm_readout(x: T.handle, wt: T.handle, rt: T.handle, bias: T.handle, h0: T.handle, c0: T.handle,
                     wot: T.handle, bias_o: T.handle, yo: T.handle, fh: T.handle, fc: T.handle, out: T.handle):
        T.func_attr({"tirx.noalias": True})
        nT = T.int64()
        nB = T.int64()
        X = T.match_buffer(x, (nT, nB, nI), "float32")
        WT = T.match_buffer(wt, (nI, nG), "float32")
        RT = T.match_buffer(rt, (nH // UB, nH, 4, UB), "float32")
        Bias = T.match_buffer(bias, (nG,), "float32")
        H0 = T.match_buffer(h0, (nB, nH), "float32")
        C0 = T.match_buffer(c0, (nB, nH), "float32")
        WoT = T.match_buffer(wot, (nH, nO), "float32")
        BiasO = T.match_buffer(bias_o, (nO,), "float32")
        Y = T.match_buffer(yo, (nT, nB, nH), "float32")
        FH = T.match_buffer(fh, (nB, nH), "float32")
        FC = T.match_buffer(fc, (nB, nH), "float32")
        Out = T.match_buffer(out, (nT, nB, nO), "float32")
        Out2 = T.decl_buffer((nT * nB, nO), "float32", data=Out.data)
        sequences(X, WT, RT, Bias, H0, C0, Y, FH, FC, WoT, BiasO, Out2)

    return lstm_readout
