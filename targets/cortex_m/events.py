"""Event lists for the Cortex-M kernels: the indices of a vector's nonzero entries.

Inputs and spikes are sparse, so the vector is read :data:`GROUP` entries at a
time and a group is looked into only when one of them is nonzero (one OR of the
bits per group: NaN and +-Inf count as nonzero, as in
:func:`..cpu.floatops.nonzero`). The products then visit the weight rows of the
listed entries only. ``skip=False`` lists every entry (the dense kernel).
"""
from __future__ import annotations

from tvm import tirx
from tvm.script import tirx as T

from ..cpu.floatops import nonzero

#: neurons whose currents a kernel keeps in registers while it adds the events' weight rows
BLOCK = 8
#: entries tested together for a nonzero one
GROUP = 4


def any_nonzero(values) -> tirx.PrimExpr:
    """One of ``values`` is not +-0 (NaN and Inf included): one test of the OR of their bits."""
    bits = tirx.reinterpret("uint32", values[0])
    for v in values[1:]:
        bits = tirx.bitwise_or(bits, tirx.reinterpret("uint32", v))
    return tirx.bitwise_and(bits, tirx.const(0x7FFFFFFF, "uint32")) != tirx.const(0, "uint32")


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
