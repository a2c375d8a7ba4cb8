"""A product by a constant weight matrix (``x @ W`` with ``W`` 2-D, plus a constant bias when an
``Add`` of one follows) for CPUs: the readout after a sequence layer (an LSTM's or an
``nn.Linear``'s ``MatMul`` + ``Add``).

TVM's default lowering of ``matmul`` + ``add`` is a scalar triple loop (about 0.9 ms per
840-step sequence for a 128 x 10 readout, a third of the sMNIST LSTM's time). Here the rows of
``x`` (all leading axes flattened: step x sequence) are cut into chunks, one per task of the
runtime's thread pool (``T.parallel``), and each chunk into tiles of ``TILE_ROWS`` rows by
``2 * lanes`` columns whose sums stay in vector registers over all of ``k`` (the rows of ``W``
are contiguous over the output columns). ``W`` and the bias are padded with zero columns to a
whole number of tiles at compile time; the padding columns are computed and never stored.
Every product is computed (no zero is skipped), so NaN and Inf propagate as in any dense
product.

:func:`constant_matmul_pass` is the Relax pass that puts the kernel in place of
``relax.matmul(x, W)`` (and ``relax.add`` of a constant bias after it) before TVM's own
lowering: the CPU target runs it first in its pipeline, other targets keep TVM's lowering.
"""
from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from ..tvmscript import T

F32 = "float32"
TILE_ROWS = 4   # rows x 2 vectors of sums: 8 of AVX2's 16 registers, the rest W's row and broadcasts
CHUNK = 64      # rows per thread-pool task


def padded(n: int, cols: int) -> int:
    """``n`` rounded up to a whole number of ``cols``-wide tiles."""
    return -(-n // cols) * cols


def tile_cols(N: int, lanes: int) -> int:
    """Columns of a tile: two vectors, or one where ``N`` fits in one."""
    return min(2 * lanes, padded(N, lanes))


def product_tile(K: int, cols: int, lanes: int):
    """The macro ``tile(Y, y0, ys, X, x0, xs, W, Bias, nr, j0, width)``: rows ``y0 + r*ys`` of
    ``Y``, columns ``j0 .. j0 + width``, for ``r < nr``, set to ``Bias[j0:] + X[x0 + r*xs, :K] @
    W[:K, j0:]`` computed over ``cols`` columns (``W`` and ``Bias`` have them, padded), the
    ``nr x cols`` sums in registers over all ``k``: first the bias, then ``k`` in order."""
    vec = T.vectorized if lanes > 1 else T.serial

    @T.macro
    def tile(Y, y0, ys, X, x0, xs, W, Bias, nr, j0, width):
        acc = T.alloc_buffer((nr, cols), F32, scope="local")
        for r in T.unroll(nr):
            for jj in vec(cols):
                acc[r, jj] = Bias[j0 + jj]
        for k in range(K):
            for r in T.unroll(nr):
                for jj in vec(cols):
                    acc[r, jj] = acc[r, jj] + X[x0 + r * xs, k] * W[k, j0 + jj]
        for r in T.unroll(nr):
            if width == cols:
                for jj in vec(cols):
                    Y[y0 + r * ys, j0 + jj] = acc[r, jj]
            else:
                for jj in T.unroll(width):
                    Y[y0 + r * ys, j0 + jj] = acc[r, jj]

    return tile


def product_rows(K: int, N: int, lanes: int):
    """The macro ``rows(Y, y0, ys, X, x0, xs, W, Bias, nr)``: every one of the ``N`` columns of
    :func:`product_tile`'s rows, a tile of :func:`tile_cols` columns at a time (``W`` and ``Bias``
    padded to :func:`padded` columns)."""
    cols = tile_cols(N, lanes)
    full, tail = N // cols, N % cols
    tile = product_tile(K, cols, lanes)

    @T.macro
    def rows(Y, y0, ys, X, x0, xs, W, Bias, nr):
        for jo in range(full):
            tile(Y, y0, ys, X, x0, xs, W, Bias, nr, jo * cols, cols)
        if tail > 0:
            tile(Y, y0, ys, X, x0, xs, W, Bias, nr, full * cols, tail)

    return rows


def matmul_kernel(*, K: int, N: int, lanes: int = 8, parallel: bool = True):
    """``Y[r, :N] = Bias[:N] + X[r, :] @ W[:, :N]`` for every row ``r`` (symbolic count), ``W``
    and ``Bias`` given padded to :func:`padded` (``N``, :func:`tile_cols`) columns."""
    nP = padded(N, tile_cols(N, lanes))
    par = T.parallel if parallel else T.serial
    rows = product_rows(K, N, lanes)

    @T.prim_func(private=True)
    def matmul(x: T.handle, w: T.handle, bias: T.handle, y: T.handle):
        T.func_attr({"tirx.noalias": True})
        nR = T.int64()
        X = T.match_buffer(x, (nR, K), F32)
        W = T.match_buffer(w, (K, nP), F32)
        Bias = T.match_buffer(bias, (nP,), F32)
        Y = T.match_buffer(y, (nR, N), F32)
        for c in par((nR + CHUNK - 1) // CHUNK):
            n = T.min(T.int64(CHUNK), nR - c * CHUNK)
            for to in range(n // TILE_ROWS):
                r0 = c * CHUNK + to * TILE_ROWS
                rows(Y, r0, 1, X, r0, 1, W, Bias, TILE_ROWS)
            for r in range(n // TILE_ROWS * TILE_ROWS, n):
                rows(Y, c * CHUNK + r, 1, X, c * CHUNK + r, 1, W, Bias, 1)

    return matmul


# -- the Relax rewrite ------------------------------------------------------------------------

def _f32_tensor(expr, ndim=None) -> bool:
    si = expr.ty
    return isinstance(si, relax.TensorType) and si.dtype == F32 and (ndim is None or si.ndim == ndim) \
        and si.ndim >= 1


def _bias_vector(b, n: int):
    """The bias as ``n`` values when adding it to an ``[..., n]`` product only broadcasts it along
    the last axis (leading axes of size 1, no more axes than the product), else None."""
    value = b.value.numpy()
    if value.dtype != np.float32 or value.size not in (1, n) or any(d != 1 for d in value.shape[:-1]):
        return None
    return np.broadcast_to(value.reshape(-1), (n,))


class _Rewriter:
    """Builds each kernel once per (K, N) and the call that replaces a matched product."""

    def __init__(self, builder: relax.BlockBuilder, lanes: int, parallel: bool):
        self.builder, self.lanes, self.parallel = builder, lanes, parallel
        self.kernels: dict = {}

    def _kernel(self, K: int, N: int):
        if (K, N) not in self.kernels:
            f = matmul_kernel(K=K, N=N, lanes=self.lanes, parallel=self.parallel)
            self.kernels[K, N] = self.builder.add_func(f, f"matmul_const_{K}x{N}")
        return self.kernels[K, N]

    def call(self, mm, bias_const=None):
        """The kernel call for ``mm`` (a ``relax.matmul``), or None where it does not apply."""
        x, w = mm.args
        if mm.attrs.out_dtype not in (None, "", F32) or not (_f32_tensor(x) and _f32_tensor(w, 2)) \
                or x.ty.ndim < 2 or x.ty.shape is None:
            return None
        K, N = (int(d) for d in w.value.numpy().shape)
        lead, k = list(x.ty.shape.values[:-1]), x.ty.shape.values[-1]
        if not isinstance(k, tvm.tirx.IntImm) or int(k) != K:
            return None
        bias = np.zeros(N, np.float32)
        if bias_const is not None:
            bias = _bias_vector(bias_const, N)
            if bias is None or bias_const.ty.ndim > len(lead) + 1:
                return None
        nP = padded(N, tile_cols(N, self.lanes))
        wp = np.zeros((K, nP), np.float32)
        wp[:, :N] = w.value.numpy()
        bp = np.zeros(nP, np.float32)
        bp[:N] = bias
        rows = 1
        for d in lead:
            rows = rows * d
        x2 = relax.op.reshape(x, relax.ShapeExpr([rows, K]))
        y2 = relax.call_tir(self._kernel(K, N), [x2, relax.const(wp), relax.const(bp)],
                            relax.TensorType([rows, N], F32))
        return relax.op.reshape(y2, relax.ShapeExpr(lead + [N]))


def constant_matmul_pass(lanes: int, parallel: bool):
    """The module pass: every ``relax.matmul(x, W)`` of float32 with ``W`` a 2-D constant, and an
    ``relax.add`` of a constant bias after it, becomes one call of :func:`matmul_kernel`."""
    x, w, b = wildcard(), is_const(), is_const()
    product = is_op("relax.matmul")(x, w)
    with_bias = is_op("relax.add")(product, b)

    @tvm.transform.module_pass(opt_level=0, name="lsnn.ConstantMatMul")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        builder = relax.BlockBuilder(mod)
        rewriter = _Rewriter(builder, lanes, parallel)

        def biased(expr, m):
            new = rewriter.call(m[product], m[b])
            return expr if new is None else new

        def plain(expr, _m):
            new = rewriter.call(expr)
            return expr if new is None else new

        for gv, func in mod.functions_items():
            if isinstance(func, relax.Function):
                func = rewrite_call(with_bias, biased, func)
                builder.update_func(gv, rewrite_call(product, plain, func))
        return relax.transform.Normalize()(builder.get())

    return _pass
