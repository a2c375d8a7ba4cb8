"""Float tests and selects as integer operations on the bits, for the Cortex-M update loops.

GCC 12 vectorises a float comparison for Helium (MVE) only under
``-funsafe-math-optimizations``, which would also let it reorder sums; on the
bits the same tests are integer comparisons, which it vectorises (and which
need no FPU status transfer on the M4). Each keeps IEEE meaning, NaN included:
NaN is neither positive nor negative nor zero. Tests give masks (all ones or 0),
combined with ``&``: a C ``&&`` would be a branch, which stops the vectoriser.
"""
from __future__ import annotations

import numpy as np
from tvm import tirx

_SIGN = 0x80000000
_INF = 0x7F800000  # +Inf
_NEG_INF = -0x00800000  # -Inf (0xFF800000) as int32


def _i32(v: int):
    return tirx.const(v, "int32")


def _u32(v: int):
    return tirx.const(v, "uint32")


def bits(x):
    return tirx.reinterpret("uint32", x)


def _signed(x):
    return tirx.reinterpret("int32", x)


def positive(x):
    """Mask of ``x > 0`` (+Inf included): as int32, the bits lie in 1 .. 0x7F800000."""
    return tirx.bitwise_and(mask(_signed(x) > _i32(0)), mask(_signed(x) <= _i32(_INF)))


def negative(x):
    """Mask of ``x < 0`` (-Inf included, -0 not): as int32, the bits lie in 0x80000001 .. 0xFF800000."""
    return tirx.bitwise_and(mask(_signed(x) > _i32(-_SIGN)), mask(_signed(x) <= _i32(_NEG_INF)))


def zero(x):
    """Mask of ``x == 0`` (+0 or -0)."""
    return mask(tirx.bitwise_and(bits(x), _u32(_SIGN - 1)) == _u32(0))


def mask(cond):
    """All ones where ``cond``, else 0 (uint32)."""
    return tirx.Select(cond, _u32(0xFFFFFFFF), _u32(0))


def choose(m, a_bits, b_bits):
    """The float whose bits are ``a_bits`` where the mask ``m`` is set, else ``b_bits``."""
    picked = tirx.bitwise_or(tirx.bitwise_and(m, a_bits), tirx.bitwise_and(tirx.bitwise_not(m), b_bits))
    return tirx.reinterpret("float32", picked)


def const_bits(v: float):
    """The bits of float32 ``v`` as a uint32 constant."""
    return _u32(int(np.array(v, np.float32).view(np.uint32)))
