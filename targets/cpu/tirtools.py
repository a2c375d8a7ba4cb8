"""TIR building blocks shared by the CPU kernels (and their C rendering).

:func:`over` runs a statement macro over ``[0, n)`` as vector code, ``lanes``
elements at a time, then the remaining ``n % lanes`` one by one: the vector
form is explicit in the TIR, so it does not hang on LLVM proving that the
kernel's buffers do not overlap. ``lanes == 1`` gives one scalar loop, the
form for TVM's C code generator (it prints no vector types).
:func:`event_list` collects the indices of the nonzero values of a row once
per step, for the event-driven products to visit.
"""
from __future__ import annotations

from tvm import tirx

from ..tvmscript import T
from .floatops import any_nonzero, nonzero


def size(dims: dict, name: str):
    """The layer size ``dims[name]`` as a constant when the importer knows it (the weights'
    shape), else a symbolic size: constant sizes put the per-sequence buffers on the stack,
    where LLVM sees that they do not overlap, and fix the loops' trip counts."""
    n = (dims or {}).get(name)
    return T.int64(n) if isinstance(n, int) else tirx.Var("n" + name, "int64")


@T.macro(hygienic=False)
def over(n, lanes, body):
    """``body(h)`` for every ``h < n``; ``body`` is a non-hygienic macro of the calling kernel.
    Blocks of ``lanes``; from 16 lanes on (AVX-512), the tail in at most one vector of
    ``lanes / 2`` and one of ``lanes / 4``, then one by one: a 220-neuron layer is 13 + 1 + 1
    vectors and no scalar step (a scalar tail of 12 would cost what the wider vectors save).
    (A variable bound inside ``body`` would stay scalar in the vector loop: TVM 0.27's
    VectorizeLoop keeps a Bind's type. Bodies store to buffers instead.)"""
    if lanes > 1:
        for c in range(n // lanes):
            for j in T.vectorized(lanes):
                body(c * lanes + j)
        if lanes >= 16:
            if n % lanes >= lanes // 2:
                for j in T.vectorized(lanes // 2):
                    body(n // lanes * lanes + j)
            if n % (lanes // 2) >= lanes // 4:
                for j in T.vectorized(lanes // 4):
                    body(n // (lanes // 2) * (lanes // 2) + j)
            for h in range(n // (lanes // 4) * (lanes // 4), n):
                body(h)
        else:
            for h in range(n // lanes * lanes, n):
                body(h)
    else:
        for h in range(n):
            body(h)


@T.macro
def _append_if_nonzero(index, count, i, value):
    """``index[count] = i``, and ``count`` advanced only when ``value`` is nonzero: no branch."""
    index[count[0]] = T.Cast("int32", i)
    count[0] = count[0] + T.Cast("int32", nonzero(value))


@T.macro
def event_list(index, count, n, value_at, skip, lanes):
    """``index[:count[0]]``: the ``i < n`` where ``value_at(i)`` is nonzero (NaN and Inf
    included, :func:`.floatops.nonzero`), in order; every ``i`` when ``skip`` is False.
    With ``lanes > 1``, blocks of ``lanes`` values are tested at once and only blocks holding
    an event are scanned (spikes are rare: most blocks are skipped by one test)."""
    if not skip:
        for i in range(n):
            index[i] = T.Cast("int32", i)
        count[0] = T.Cast("int32", n)
    elif lanes > 1:
        count[0] = 0
        for c in range(n // lanes):
            if any_nonzero(value_at, c * lanes, lanes):
                for j in range(lanes):
                    _append_if_nonzero(index, count, c * lanes + j, value_at(c * lanes + j))
        for i in range(n // lanes * lanes, n):
            _append_if_nonzero(index, count, i, value_at(i))
    else:
        count[0] = 0
        for i in range(n):
            _append_if_nonzero(index, count, i, value_at(i))


#: float32 values per 64-byte cache line
LINE = 16


@T.macro
def prefetch(row_at, n, write):
    """Ask the cache for the lines holding ``row_at(0)`` to ``row_at(n - 1)`` (a contiguous row)
    before they are used (``write``: 1 to write them). LLVM only: TVM's C prints no such call."""
    for q in range((n + LINE - 1) // LINE):
        T.evaluate(T.call_llvm_intrin("void", "llvm.prefetch.p0", T.address_of(row_at(q * LINE)),
                                      T.int32(write), T.int32(3), T.int32(1)))
