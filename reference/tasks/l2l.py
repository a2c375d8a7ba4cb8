"""Learning-to-learn nonlinear functions, the supervised L2L task of Bellec et al. (2018).

A family of target functions of ``x`` in ``[-1, 1]^2`` (:mod:`.l2l_families`): by default
``paraboloid``, ``f(x) = a (|x - c|^2 - 1/2) + b``, bowls and domes whose apex lies inside the
domain, so that no plane fits them; ``sigmoid-windows`` and ``sigmoid-net`` (the first
checkpoints'), random two-layer networks of ``n_hidden_fn`` sigmoid units
``f(x) = w2 . sigmoid(W1 x + b1) + b2``.
An episode samples one ``f`` and ``n_trials`` inputs; trial ``k`` lasts ``trial_ms``
and shows ``x_k`` together with ``f(x_{k-1})``, the answer to the previous trial
(nothing on the first), and with ``answer_with_input`` also ``x_{k-1}`` beside its answer: the
pair ``(x, f(x))`` arrives at once, so the network need not hold ``x_{k-1}`` through a trial to
learn from its answer. The network must predict ``f(x_k)`` during the last
``score_ms`` of trial ``k``. Its weights are fixed within an episode, so it can
only improve from trial to trial by what its own dynamics store: outer loop
BPTT over many functions, inner loop the network's state.

Encoding: each of ``x1``, ``x2`` (then, with ``answer_with_input``, the previous trial's ``x1``,
``x2``) and the previous answer has ``n_per_var`` input neurons with
Gaussian tuning curves (centres evenly over ``[-1, 1]``, or ``[-y_range, y_range]`` for the answer,
``tuning_width`` centre spacings wide), firing Poisson spikes at up to ``rate_hz``. The target is
float ``[T, B]``: ``f(x_k)`` on scored steps, NaN elsewhere; the prediction of a trial is the
readout averaged over its scored steps. The held-out learning curve is reported beside two
per-episode predictors fit on the trials seen so far (:mod:`.l2l_baselines`): least squares (a
plane) and the posterior mean under the family's own prior (the nonlinear ceiling), with the
family's variance over the domain for scale.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from .base import ALL_ROWS, Task
from .l2l_baselines import family_kriging_baseline, family_variance, linear_baseline
from .l2l_families import FunctionFamily, function_family
from ..errors import ConfigError

#: the parameters added after the first checkpoints, each with the value a saved configuration that
#: does not name it meant (what the task did before it existed)
ADDED_PARAMETERS = {"family": "sigmoid-net", "tuning_width": 1.0, "answer_with_input": False}


@dataclass
class L2LRegression(Task):
    n_trials: int = 25
    trial_ms: int = 20
    score_ms: int = 10
    n_per_var: int = 40
    n_hidden_fn: int = 6
    rate_hz: float = 200.0
    y_range: float = 2.0
    dt: float = 1.0
    heldout_seed: int = 2018
    heldout_size: int = 256
    family: str = "paraboloid"
    tuning_width: float = 3.0  # of an input neuron's Gaussian tuning curve, in centre spacings
    answer_with_input: bool = True  # trial k also shows x_{k-1} beside its answer f(x_{k-1})

    name = "l2l-regression"
    n_out = 1
    metric = "mse"  # lower is better

    def __post_init__(self):
        self.S = int(round(self.trial_ms / self.dt))
        self.score_steps = int(round(self.score_ms / self.dt))
        if not 0 < self.score_steps <= self.S:
            raise ConfigError(f"l2l-regression: score_ms must be within a trial of {self.trial_ms} ms")
        if not self.tuning_width > 0:
            raise ConfigError(f"l2l-regression: tuning_width must be positive, not {self.tuning_width}")
        self.function_family: FunctionFamily = function_family(self.family, self.n_hidden_fn)
        self._baselines: dict = {}  # per held-out limit: the baselines' curves, computed once

    @classmethod
    def from_config(cls, params: dict, data_dir: str | None = None) -> "L2LRegression":
        """A saved configuration (it names every parameter of the first checkpoints) that does not
        name a parameter of ``ADDED_PARAMETERS`` means its value from before it existed."""
        if {f.name for f in fields(cls)} - set(ADDED_PARAMETERS) <= set(params):
            params = {**ADDED_PARAMETERS, **params}
        return cls(**params)

    @property
    def n_variables(self) -> int:
        """Coded variables: ``x_k`` (2), ``x_{k-1}`` (2, with ``answer_with_input``), ``f(x_{k-1})``."""
        return 5 if self.answer_with_input else 3

    @property
    def n_in(self) -> int:
        return self.n_variables * self.n_per_var

    @property
    def T(self) -> int:
        return self.n_trials * self.S

    def config(self) -> dict:
        return {"name": self.name, **asdict(self)}

    def functions(self, B: int, rng: np.random.Generator) -> dict:
        return self.function_family.draw(B, rng)

    def apply(self, fn: dict, x: np.ndarray) -> np.ndarray:
        """``f(x)`` for ``x`` ``[B, K, 2]`` -> ``[B, K]``."""
        return self.function_family.apply(fn, x)

    def _rates(self, v: np.ndarray, lo: float, hi: float) -> np.ndarray:
        """Firing probability of each tuning curve ``[..., n_per_var]`` (silent where ``v`` is NaN)."""
        centres = np.linspace(lo, hi, self.n_per_var)
        width = self.tuning_width * (hi - lo) / (self.n_per_var - 1)
        return np.nan_to_num(np.exp(-0.5 * ((v[..., None] - centres) / width) ** 2), nan=0.0)

    def _input_rates(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``[B, K, n_in]``: each trial's coded variables (see :attr:`n_variables`); what belongs to
        the trial before is NaN, so silent, on the first."""
        prev_x, prev_y = _shifted(x), _shifted(np.clip(y, -self.y_range, self.y_range))
        inputs = [x[..., 0], x[..., 1]] + ([prev_x[..., 0], prev_x[..., 1]] if self.answer_with_input else [])
        return np.concatenate([self._rates(v, -1, 1) for v in inputs]
                              + [self._rates(prev_y, -self.y_range, self.y_range)], axis=-1)

    def episodes(self, batch_size: int, rng: np.random.Generator):
        """``(X, target, x, y)``: spikes, per-step targets, trial inputs ``[B, K, 2]`` and answers ``[B, K]``."""
        B, K, S = batch_size, self.n_trials, self.S
        fn = self.functions(B, rng)
        x = rng.uniform(-1, 1, (B, K, 2))
        y = self.apply(fn, x)
        rates = self._input_rates(x, y)
        p = np.repeat(rates.transpose(1, 0, 2), S, axis=0) * self.rate_hz * self.dt / 1000.0  # [T, B, n_in]
        X = (rng.random(p.shape) < p).astype(np.float32)
        target = np.full((K, S, B), np.nan, np.float32)
        target[:, S - self.score_steps:, :] = y.T[:, None, :]
        return torch.from_numpy(X), torch.from_numpy(target.reshape(K * S, B)), x, y

    def batch(self, batch_size: int, rng: np.random.Generator, rows: slice = ALL_ROWS):
        X, target, _, _ = self.episodes(batch_size, rng)
        return X[:, rows], target[:, rows]

    def heldout(self, batch_size: int, limit: int | None = None):
        """Held-out episodes: functions never drawn in training (their own seed), the same ones
        whatever the batch size (drawn at once, then cut into batches)."""
        X, target, _, _ = self.heldout_episodes(limit)
        for start in range(0, X.shape[1], batch_size):
            yield X[:, start:start + batch_size], target[:, start:start + batch_size]

    def heldout_episodes(self, limit: int | None = None):
        n = self.heldout_size if limit is None else min(limit, self.heldout_size)
        return self.episodes(n, np.random.default_rng(self.heldout_seed))

    # -- scoring -------------------------------------------------------------------------------
    def loss(self, Y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = ~torch.isnan(target)
        return torch.mean((Y[..., 0][valid] - target[valid]) ** 2)

    def loss_terms(self, target: torch.Tensor) -> int:
        return int((~torch.isnan(target)).sum())

    def predictions(self, Y, target) -> tuple[np.ndarray, np.ndarray]:
        """Per trial: the readout averaged over its scored steps, and the answer ``[B, K]``."""
        Y = np.asarray(Y)[..., 0]
        target = np.asarray(target)
        K, S = self.n_trials, self.S
        Y = Y.reshape(K, S, -1)[:, S - self.score_steps:]
        t = target.reshape(K, S, -1)[:, -1]
        return Y.mean(1).T, t.T

    def score(self, Y, target) -> tuple[float, int]:
        """Sum of squared trial errors and the number of trials (mean: the ``mse`` metric)."""
        pred, y = self.predictions(Y, target)
        return float(((pred - y) ** 2).sum()), int(y.size)

    def curve(self, Y, target) -> np.ndarray:
        """Squared error of each trial, summed over the batch ``[K]``."""
        pred, y = self.predictions(Y, target)
        return ((pred - y) ** 2).sum(0)

    def curve_metrics(self, curve: np.ndarray, trials: int, limit: int | None) -> dict:
        """Mean squared error per trial of the held-out episodes, beside the per-episode predictors
        on the same episodes (linear, and the nonlinear fit of the family) and the family's variance."""
        episodes = trials // self.n_trials
        return {"mse_per_trial": _rounded(curve / max(episodes, 1)), **self.baselines(limit), "episodes": episodes}

    def baselines(self, limit: int | None) -> dict:
        """The baselines' per-trial MSE on the held-out episodes (``limit`` of them), computed once."""
        if limit not in self._baselines:
            _, _, x, y = self.heldout_episodes(limit)
            self._baselines[limit] = {
                "linear_baseline_mse_per_trial": _rounded(linear_baseline(x, y).mean(0)),
                "nonlinear_fit_mse_per_trial": _rounded(family_kriging_baseline(self.function_family, x, y).mean(0)),
                "function_variance": round(family_variance(self.function_family), 5)}
        return self._baselines[limit]


def _shifted(values: np.ndarray) -> np.ndarray:
    """``values`` ``[B, K, ...]`` one trial later: trial ``k`` holds trial ``k-1``'s, the first NaN."""
    return np.concatenate([np.full_like(values[:, :1], np.nan), values[:, :-1]], axis=1)


def _rounded(values) -> list[float]:
    return [round(float(v), 5) for v in values]
