"""A vectorisable ``exp`` for TIR kernels (no libm calls), and the sigmoid made from it.

``exp`` is Cephes' ``expf``: ``x = n ln2 + r`` with ``|r| <= ln2/2``, a degree-5 polynomial
for ``e^r`` and ``2^n`` built in the exponent bits; relative error about 2 ulp on
``[-87, 88]`` (beyond: 0 and a large finite value; NaN stays NaN).

Why not :func:`.fastmath.sigmoid` everywhere: ``0.5 tanh(x/2) + 0.5`` saturates at
``1 - 1.2e-7`` (the rational tanh's clamp), so a GRU's ``1 - z`` is ``1.2e-7`` where the
float32 sigmoid gives 0: ONNX's GRU cases (absolute tolerance 1e-7) fail on it.
``1 / (1 + exp(-x))`` is the float32 sigmoid to an ulp over the whole range.
"""
from __future__ import annotations

from tvm import tirx

from .fastmath import _f
from .floatops import at_least, at_most

_LOG2E = 1.44269504088896341
_C1, _C2 = 0.693359375, -2.12194440e-4  # ln 2 = C1 + C2, C1 exact in few bits
_P = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1]


def exp(x):
    x = at_least(at_most(x, _f(88.0)), _f(-87.0))
    n = tirx.floor(x * _f(_LOG2E) + _f(0.5))
    r = x - n * _f(_C1) - n * _f(_C2)
    y = _f(_P[0])
    for c in _P[1:]:
        y = y * r + _f(c)
    y = y * r * r + r + _f(1.0)
    scale = tirx.reinterpret("float32", tirx.shift_left(tirx.Cast("int32", n) + 127, 23))
    return y * scale


def sigmoid(x):
    return _f(1.0) / (_f(1.0) + exp(-x))
