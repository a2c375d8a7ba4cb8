"""The families of target functions of learning-to-learn regression: random two-layer networks of
sigmoid units ``f(x) = w2 . sigmoid(W1 x + b1) + b2`` on ``x`` in ``[-1, 1]^2``.

``sigmoid-net`` is the family of the first checkpoints (Bellec et al. 2018 as first read): every
weight and bias uniform in ``[-1, 1]``. On ``[-1, 1]^2`` its pre-activations stay within about
``[-3, 3]``, where a sigmoid is nearly linear: least squares on a handful of trials predicts these
functions to an MSE of 0.0005 against a variance of 0.04, so a learner need not be nonlinear.

``sigmoid-windows`` pairs its hidden units: two parallel steep sigmoids with opposite output
weights make a soft window (a ridge ``2 s`` wide across the domain, centre ``c`` within it), and
the function is the sum of ``n_hidden / 2`` such windows plus a bias. Still a two-layer sigmoid
network, but with the steep units placed in the domain: about 60% of each function's variance is
beyond any plane, so a per-episode linear fit stays far from the target while a fit that knows
the class is near it after 24 trials (see :mod:`.l2l_baselines`).
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def sigmoid_net(fn: dict, x: np.ndarray) -> np.ndarray:
    """``f(x)`` for ``x`` ``[B, K, 2]`` -> ``[B, K]``; ``fn`` holds ``W1 [B, H, 2]``, ``b1 [B, H]``,
    ``w2 [B, H]``, ``b2 [B]``."""
    h = 1 / (1 + np.exp(-(np.einsum("bhi,bki->bkh", fn["W1"], x) + fn["b1"][:, None, :])))
    return np.einsum("bkh,bh->bk", h, fn["w2"]) + fn["b2"][:, None]


class FunctionFamily:
    """A distribution over functions of ``x`` in ``[-1, 1]^2``: :meth:`draw` gives the parameters of
    ``B`` of them, :meth:`apply` their values. The two-layer families have ``n_hidden`` hidden units."""
    name: str

    def __init__(self, n_hidden: int):
        self.n_hidden = n_hidden

    def draw(self, B: int, rng: np.random.Generator) -> dict:
        """The parameters of ``B`` functions (for the two-layer families, the weights of
        :func:`sigmoid_net`)."""
        raise NotImplementedError

    @staticmethod
    def apply(fn: dict, x: np.ndarray) -> np.ndarray:
        """``f(x)`` for ``x`` ``[B, K, 2]`` -> ``[B, K]``."""
        return sigmoid_net(fn, x)


class SigmoidNet(FunctionFamily):
    name = "sigmoid-net"

    def draw(self, B: int, rng: np.random.Generator) -> dict:
        H = self.n_hidden
        return {"W1": rng.uniform(-1, 1, (B, H, 2)), "b1": rng.uniform(-1, 1, (B, H)),
                "w2": rng.uniform(-1, 1, (B, H)), "b2": rng.uniform(-1, 1, B)}


class SigmoidWindows(FunctionFamily):
    name = "sigmoid-windows"
    gain = 8.0                # slope of each sigmoid across its edge (per unit of x)
    half_width = (0.2, 0.5)   # half the window's width
    centre = 0.7              # window centres uniform in [-centre, centre]^2
    height = 1.0              # output weights uniform in [-height, height]
    bias = 0.5                # b2 uniform in [-bias, bias]

    def __init__(self, n_hidden: int):
        if n_hidden < 2 or n_hidden % 2:
            raise ConfigError(f"l2l-regression: the sigmoid-windows family pairs its hidden units; "
                              f"n_hidden_fn must be even and at least 2, not {n_hidden}")
        super().__init__(n_hidden)

    def draw(self, B: int, rng: np.random.Generator) -> dict:
        P = self.n_hidden // 2
        angle = rng.uniform(0, 2 * np.pi, (B, P))
        direction = np.stack([np.cos(angle), np.sin(angle)], axis=-1)                   # [B, P, 2]
        centre = rng.uniform(-self.centre, self.centre, (B, P, 2))
        half = rng.uniform(*self.half_width, (B, P))
        height = rng.uniform(-self.height, self.height, (B, P))
        offset = -np.einsum("bpi,bpi->bp", direction, centre)                           # d . (x - c)
        g = self.gain
        return {"W1": np.concatenate([g * direction, g * direction], axis=1),
                "b1": np.concatenate([g * (offset + half), g * (offset - half)], axis=1),
                "w2": np.concatenate([height, -height], axis=1),
                "b2": rng.uniform(-self.bias, self.bias, B)}


class Paraboloid(FunctionFamily):
    """``f(x) = a (|x - c|^2 - 1/2) + b``: a bowl (``a > 0``) or a dome (``a < 0``) with its apex
    ``c`` inside the domain. Three latent numbers, each visible in a few trials, and a shape no
    plane follows: with the apex inside, the gradient changes sign across the domain, so the least
    squares plane of 24 trials misses about 40% of the variance while the family's own fit is exact
    (a quadratic is linear in ``1, x, |x|^2``). ``n_hidden`` is not used."""
    name = "paraboloid"
    apex = 0.5           # c uniform in [-apex, apex]^2
    curvature = (0.25, 0.5)  # |a| uniform in this range, its sign even odds
    bias = 0.5           # b uniform in [-bias, bias]

    def draw(self, B: int, rng: np.random.Generator) -> dict:
        return {"c": rng.uniform(-self.apex, self.apex, (B, 2)),
                "a": rng.uniform(*self.curvature, B) * rng.choice([-1.0, 1.0], B),
                "b": rng.uniform(-self.bias, self.bias, B)}

    @staticmethod
    def apply(fn: dict, x: np.ndarray) -> np.ndarray:
        r2 = ((x - fn["c"][:, None, :]) ** 2).sum(-1)
        return fn["a"][:, None] * (r2 - 0.5) + fn["b"][:, None]


FAMILIES = {cls.name: cls for cls in (SigmoidNet, SigmoidWindows, Paraboloid)}


def function_family(name: str, n_hidden: int) -> FunctionFamily:
    if name not in FAMILIES:
        raise ConfigError(f"l2l-regression: unknown function family '{name}'; choose one of {sorted(FAMILIES)}")
    return FAMILIES[name](n_hidden)
