"""Event lists for the Cortex-M kernels: the indices of a vector's nonzero entries.

Inputs and spikes are sparse, so the vector is read :data:`GROUP` entries at a
time and a group is looked into only when one of them is nonzero (one OR of the
bits per group: NaN and +-Inf count as nonzero, as in
:func:`..cpu.floatops.nonzero`). The products then visit the weight rows of the
listed entries only. ``skip=False`` lists every entry (the dense kernel).
"""
from __future__ import annotations

from tvm import tirx

from ..cpu.floatops import nonzero
from ..tvmscript import T

#: neurons whose currents a kernel keeps in registers while it adds the events' weight rows
BLOCK = 8
#: entries tested together for a nonzero one
GROUP = 8
#: the widths of the blocks after the full ones: ``n % BLOCK`` entries as at most one block of each
#: (one entry at a time, a 4-neuron tail cost a pass over the step's events per neuron)
TAIL = (BLOCK // 2, BLOCK // 4, BLOCK // 8)
assert TAIL == (4, 2, 1), "blocks() writes out one tail block per bit of n % BLOCK"


def any_nonzero(values) -> tirx.PrimExpr:
    """One of ``values`` is not +-0 (NaN and Inf included): one test of the OR of their bits."""
    bits = tirx.reinterpret("uint32", values[0])
    for v in values[1:]:
        bits = tirx.bitwise_or(bits, tirx.reinterpret("uint32", v))
    return tirx.bitwise_and(bits, tirx.const(0x7FFFFFFF, "uint32")) != tirx.const(0, "uint32")


@T.macro(hygienic=False)
def blocks(n, body, arg, block=BLOCK, tail=TAIL):
    """``body(first, width, arg)`` over ``0 .. n``: :data:`BLOCK` entries at a time, then the rest
    in blocks of :data:`TAIL` widths (each where ``n % BLOCK`` has its bit). Not hygienic:
    ``body`` sees the caller's names (this macro's own come in as defaults)."""
    for k in range(n // block):
        body(k * block, block, arg)
    if n % (2 * tail[0]) >= tail[0]:  # TVMScript loops are TIR loops: the tail's blocks written out
        body(n // (2 * tail[0]) * (2 * tail[0]), tail[0], arg)
    if n % (2 * tail[1]) >= tail[1]:
        body(n // (2 * tail[1]) * (2 * tail[1]), tail[1], arg)
    if n % (2 * tail[2]) >= tail[2]:
        body(n // (2 * tail[2]) * (2 * tail[2]), tail[2], arg)


@T.macro
def gather(src, prefix, n, skip, ev, count):
    """``ev[0 .. count[0])``: the indices ``i < n`` where ``src[*prefix, i]`` is nonzero, in order."""
    count[0] = 0
    for g in range(n // GROUP):
        if not skip or any_nonzero([src[(*prefix, g * GROUP + j)] for j in range(GROUP)]):
            for j in T.unroll(GROUP):
                if not skip or nonzero(src[(*prefix, g * GROUP + j)]):
                    ev[count[0]] = T.Cast("int32", g * GROUP + j)
                    count[0] = count[0] + 1
    for i in range(n % GROUP):
        if not skip or nonzero(src[(*prefix, n // GROUP * GROUP + i)]):
            ev[count[0]] = T.Cast("int32", n // GROUP * GROUP + i)
            count[0] = count[0] + 1
