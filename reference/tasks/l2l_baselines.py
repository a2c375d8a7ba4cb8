"""Per-episode predictors a learning-to-learn network is measured against, each predicting the
answer of trial ``k`` from the trials before it of the same episode, and the family's variance
that puts their errors on a scale.

- :func:`linear_baseline`: least squares with a bias. A learner worse than it has learnt nothing a
  plane would not give.
- :func:`family_kriging_baseline`: the nonlinear fit that serves as the ceiling. It knows the
  function class: its prior is the family's own mean ``m(x)`` and covariance ``k(x, x')``
  (estimated once from ``n_functions`` functions drawn from the family), and it predicts the
  posterior mean ``m(x_k) + k_k^T K^-1 (y - m)`` given the exact answers so far (Gaussian-process
  regression, kriging). This is the best predictor that is linear in the answers seen, for any
  family, and the Bayes-optimal predictor when the family is Gaussian; a meta-learner trained on
  the MSE over the family approximates the posterior mean, so this is what it could reach. Unlike
  fitting a network of the class to each episode (41 parameters for 24 points: an under-determined,
  non-convex fit whose result depends on restarts and regularisation) or kernel ridge regression
  with a tuned RBF kernel, it has no choice to argue over and is deterministic, and it is a few
  batched ``K x K`` solves.
"""
from __future__ import annotations

import numpy as np
import torch

from .l2l_families import FunctionFamily

#: functions drawn to estimate the family's mean and covariance, and their seed
KRIGING_FUNCTIONS = 2048
KRIGING_SEED = 7
#: added to the covariance's diagonal, relative to its mean variance (conditioning of close points)
KRIGING_JITTER = 1e-6


def linear_baseline(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Squared error per trial ``[B, K]`` of the optimal linear predictor fit on the trials before
    (least squares from four trials on; the mean of the answers so far until then: an exact fit
    through three points extrapolates wildly when they are nearly collinear)."""
    B, K, _ = x.shape
    err = np.zeros((B, K))
    A = np.concatenate([x, np.ones((B, K, 1))], axis=2)
    for k in range(K):
        if k == 0:
            pred = np.zeros(B)
        elif k <= 3:
            pred = y[:, :k].mean(1)
        else:
            w = np.stack([np.linalg.lstsq(A[b, :k], y[b, :k], rcond=None)[0] for b in range(B)])
            pred = np.einsum("bi,bi->b", A[:, k], w)
        err[:, k] = (pred - y[:, k]) ** 2
    return err


def family_moments(family: FunctionFamily, x: np.ndarray, n_functions: int = KRIGING_FUNCTIONS,
                   seed: int = KRIGING_SEED, chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """The family's mean ``[B, K]`` and covariance ``[B, K, K]`` at each episode's inputs
    ``x [B, K, 2]``, from ``n_functions`` functions drawn with ``seed``."""
    fn = family.draw(n_functions, np.random.default_rng(seed))
    means, covs = [], []
    for start in range(0, x.shape[0], chunk):
        pts = x[start:start + chunk]
        b, K, _ = pts.shape
        F = family.apply(fn, np.broadcast_to(pts.reshape(1, b * K, 2), (n_functions, b * K, 2)))
        F = torch.from_numpy(F.reshape(n_functions, b, K)).transpose(0, 1)             # [b, M, K]
        mean = F.mean(1)
        centred = F - mean[:, None]
        means.append(mean)
        covs.append(centred.transpose(1, 2) @ centred / n_functions)
    return torch.cat(means), torch.cat(covs)


def family_kriging_baseline(family: FunctionFamily, x: np.ndarray, y: np.ndarray,
                            n_functions: int = KRIGING_FUNCTIONS, seed: int = KRIGING_SEED) -> np.ndarray:
    """Squared error per trial ``[B, K]`` of the posterior mean under the family's prior given the
    trials before (the prior mean on the first)."""
    mean, cov = family_moments(family, x, n_functions, seed)
    y = torch.from_numpy(np.asarray(y, np.float64))
    B, K = y.shape
    jitter = KRIGING_JITTER * torch.diagonal(cov, dim1=1, dim2=2).mean(1)
    resid = y - mean
    pred = mean.clone()
    for k in range(1, K):
        A = cov[:, :k, :k] + jitter[:, None, None] * torch.eye(k, dtype=cov.dtype)
        w = torch.linalg.solve(A, resid[:, :k, None])[..., 0]
        pred[:, k] += (cov[:, k, :k] * w).sum(1)
    return ((pred - y) ** 2).numpy()


def family_variance(family: FunctionFamily, n_functions: int = 256, n_points: int = 1024, seed: int = 0) -> float:
    """The variance of a function over the domain, averaged over the family: the MSE of predicting
    each function by its own mean, what an error is to be compared with."""
    rng = np.random.default_rng(seed)
    fn = family.draw(n_functions, rng)
    return float(family.apply(fn, rng.uniform(-1, 1, (n_functions, n_points, 2))).var(1).mean())
