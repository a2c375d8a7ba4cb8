"""Vectorisable tanh and sigmoid for TIR kernels (no libm calls).

``tanh`` is the rational approximation used by Eigen for float
(``x * P(x^2) / Q(x^2)`` on ``x`` clamped to +-7.9053), absolute error below
4e-7 over the reals; ``sigmoid(x) = 0.5 * tanh(x / 2) + 0.5``. The clamp lets
NaN through (``tanh(NaN)`` is NaN, as in the reference) and takes +-Inf to
+-1; a ``min``/``max`` clamp would turn NaN into +-1.

Coefficients enter the TIR as the bits of their float32 values: TVM's C code
generator prints float literals with 7 significant digits, which would change
them (Eigen's first coefficients of P and Q even print alike), and the
approximation is sensitive to that over hundreds of LSTM steps.
"""
from __future__ import annotations

import numpy as np
from tvm import tirx

from .floatops import at_least, at_most

_CLAMP = 7.90531110763549805
_ALPHA = [4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08,
          -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16]
_BETA = [4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06]


def _f(v: float):
    """``v`` as float32, exactly, on every target (LLVM folds it; C gets the bits)."""
    bits = int(np.array(v, np.float32).view(np.uint32))
    return tirx.reinterpret("float32", tirx.const(bits, "uint32"))


def tanh(x):
    x = at_least(at_most(x, _f(_CLAMP)), _f(-_CLAMP))
    x2 = x * x
    p = _f(_ALPHA[-1])
    for c in reversed(_ALPHA[:-1]):
        p = x2 * p + _f(c)
    q = _f(_BETA[-1])
    for c in reversed(_BETA[:-1]):
        q = x2 * q + _f(c)
    return x * p / q


def sigmoid(x):
    return _f(0.5) * tanh(_f(0.5) * x) + _f(0.5)
