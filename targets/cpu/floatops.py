"""Float tests and clamps for TIR kernels that keep the spec's meaning on NaN and Inf,
whatever the code generator makes of a float comparison.

TVM's LLVM code generator turns ``x != 0`` into an *ordered* comparison (false for
NaN) and ``max(x, 0)`` into ``x > 0 ? x : 0`` (0 for NaN); CUDA's ``fmaxf`` also
drops a NaN. The reference (PyTorch) lets NaN through both: a NaN input is an
event like any nonzero one, and ``max(r - 1, 0)`` of NaN is NaN. These helpers
say so explicitly: the zero test reads the bits, and each clamp is a select
whose condition is false for NaN, so NaN passes through on every target.
"""
from __future__ import annotations

import functools

from tvm import tirx

_ABS_BITS = 0x7FFFFFFF


def nonzero(x):
    """``x`` is not +0 or -0: true for NaN and +-Inf (an integer test of the bits)."""
    bits = tirx.reinterpret("uint32", x)
    return tirx.bitwise_and(bits, tirx.const(_ABS_BITS, "uint32")) != tirx.const(0, "uint32")


def any_nonzero(value_at, start, count: int):
    """Some ``value_at(start + j)``, ``j < count``, is not +0 or -0: one test of the OR of their
    bits (LLVM makes it one vector load and test when ``count`` values are contiguous)."""
    bits = [tirx.reinterpret("uint32", value_at(start + j)) for j in range(count)]
    return tirx.bitwise_and(functools.reduce(tirx.bitwise_or, bits),
                            tirx.const(_ABS_BITS, "uint32")) != tirx.const(0, "uint32")


def at_least(x, low):
    """``max(x, low)``, NaN where ``x`` is NaN (as ``torch.clamp(x, min=low)``)."""
    return tirx.Select(x < low, low, x)


def at_most(x, high):
    """``min(x, high)``, NaN where ``x`` is NaN."""
    return tirx.Select(x > high, high, x)
