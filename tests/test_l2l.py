"""Learning-to-learn regression: the task, its linear baseline, training, parity and the report."""
import json

import numpy as np
import pytest

from lsnn.reference.errors import ConfigError
import torch

from lsnn.compiler.cli import main
from lsnn.targets.verify import verify
from lsnn.compiler.onnx.export import export_checkpoint
from lsnn.reference.tasks import L2LRegression, linear_baseline, make_task, task_from_config
from lsnn.reference.tasks.l2l_baselines import family_kriging_baseline, family_variance
from lsnn.reference.tasks.l2l_families import Paraboloid, SigmoidNet, SigmoidWindows
from lsnn.reference.train import train

TINY = {"n_trials": 6, "trial_ms": 10, "score_ms": 5, "n_per_var": 8, "heldout_size": 8}


def test_episode_layout_and_targets():
    task = L2LRegression(**TINY, answer_with_input=False, family="sigmoid-net", n_hidden_fn=10)
    X, target, x, y = task.episodes(3, np.random.default_rng(0))
    assert X.shape == (60, 3, 24) and target.shape == (60, 3) and x.shape == (3, 6, 2) and y.shape == (3, 6)
    assert set(np.unique(X.numpy())) <= {0.0, 1.0}
    t = target.numpy().reshape(6, 10, 3)
    assert np.isnan(t[:, :5]).all() and np.allclose(t[:, 5:], y.T[:, None, :])
    # the previous answer is shown from the second trial on: its channels are silent in the first
    assert X[:10, :, 16:].sum() == 0 and X[10:, :, 16:].sum() > 0
    fn = SigmoidNet(10).draw(2, np.random.default_rng(1))
    assert all(np.abs(v).max() <= 1 for v in fn.values())
    by_hand = fn["w2"][0] @ (1 / (1 + np.exp(-(fn["W1"][0] @ [0.3, -0.2] + fn["b1"][0])))) + fn["b2"][0]
    assert np.isclose(task.apply(fn, np.array([[[0.3, -0.2]], [[0.0, 0.0]]]))[0, 0], by_hand)


def test_answer_is_shown_beside_its_input():
    """Trial k codes x_k, then x_{k-1} and f(x_{k-1}) together (silent in the first trial)."""
    task = L2LRegression(**TINY, answer_with_input=True)
    assert task.n_in == 5 * 8
    X, _, x, y = task.episodes(3, np.random.default_rng(0))
    assert X.shape == (60, 3, 40) and X[:10, :, 16:].sum() == 0 and X[10:, :, 16:32].sum() > 0
    rates = task._input_rates(x, y)
    assert np.array_equal(rates[:, 1:, 16:32], rates[:, :-1, :16])  # x_{k-1} coded as x_k was
    assert np.array_equal(rates[:, 1:, 32:], L2LRegression(**TINY, answer_with_input=False)._input_rates(x, y)[:, 1:, 16:])


# the first checkpoints' task configuration (models/l2l-*/config.json), and what it drew before
# function families existed: held-out episodes and a training batch must not change by a bit
FIRST_CONFIG = {"dt": 1.0, "heldout_seed": 2018, "heldout_size": 256, "n_hidden_fn": 10, "n_per_var": 40,
                "n_trials": 25, "name": "l2l-regression", "rate_hz": 200.0, "score_ms": 10, "trial_ms": 20,
                "y_range": 3.0}


def test_first_checkpoints_configuration_draws_the_first_task():
    task = task_from_config(FIRST_CONFIG)
    assert (task.family, task.tuning_width) == ("sigmoid-net", 1.0)
    X, target, x, y = task.heldout_episodes(4)
    assert X.shape == (500, 4, 120) and int(X.sum()) == 2958
    assert float((X * torch.arange(500)[:, None, None]).sum()) == 753433.0
    assert float((X * torch.arange(120)).sum()) == 179056.0
    assert y[0, :3].tolist() == [1.8390387588604618, 1.7927363722388545, 2.161961039555973]
    assert y[1, :3].tolist() == [1.5604743498928664, 1.3853783210535058, 1.0948662135963627]
    assert x[0, 0].tolist() == [0.7329954678045749, -0.012108990923523688]
    X, target = task.batch(3, np.random.default_rng(5))
    assert int(X.sum()) == 2191 and float(torch.nansum(target)) == 170.7672119140625
    # a new run names only what it changes: the new family and coding
    assert make_task("l2l-regression", n_trials=25).family == "paraboloid"
    assert make_task("l2l-regression").answer_with_input
    assert task_from_config(task.config()) == task  # and its saved configuration reads back as itself


def test_configuration_saved_before_answer_with_input_keeps_its_coding():
    """A configuration of the sigmoid-windows family saved before ``answer_with_input`` existed
    codes three variables (120 inputs), as its checkpoint was trained, whatever a new run's default."""
    saved = {**FIRST_CONFIG, "family": "sigmoid-windows", "n_hidden_fn": 6, "tuning_width": 3.0, "y_range": 2.0}
    task = task_from_config(saved)
    assert not task.answer_with_input and task.n_in == 120
    assert make_task("l2l-regression", answer_with_input=True).n_in == 200


def test_windows_family_defeats_a_plane_but_not_a_fit_of_the_class():
    """Final-trial MSE over 64 episodes: a plane fit by least squares stays far above the
    posterior mean under the family's prior (the nonlinear ceiling), which the sigmoid-net family
    does not show (a plane fits it)."""
    rng = np.random.default_rng(3)
    windows = SigmoidWindows(6)
    x = rng.uniform(-1, 1, (64, 25, 2))
    y = windows.apply(windows.draw(64, rng), x)
    linear, ceiling = linear_baseline(x, y)[:, -1].mean(), family_kriging_baseline(windows, x, y)[:, -1].mean()
    variance = family_variance(windows)
    assert linear > 5 * ceiling and linear > 0.5 * variance and 0.05 < variance < 0.2
    first = SigmoidNet(10)
    y = first.apply(first.draw(64, rng), x)
    assert linear_baseline(x, y)[:, -1].mean() < 0.02 * family_variance(first)
    fn = windows.draw(1, rng)  # pairs of parallel sigmoids with opposite output weights: windows
    assert np.allclose(fn["W1"][0, :3], fn["W1"][0, 3:]) and np.allclose(fn["w2"][0, :3], -fn["w2"][0, 3:])


def test_paraboloid_family_defeats_a_plane_and_is_fit_exactly_by_its_class():
    """A bowl or dome with its apex inside the domain: the plane of 24 trials keeps at least a third
    of the variance, while the posterior mean under the family's prior is exact (to its jitter) once five trials
    pin its four numbers (a, c, b); values stay within the answers' coding range."""
    rng = np.random.default_rng(4)
    family = Paraboloid(0)
    x = rng.uniform(-1, 1, (64, 25, 2))
    fn = family.draw(64, rng)
    y = family.apply(fn, x)
    variance = family_variance(family)
    linear, ceiling = linear_baseline(x, y)[:, -1].mean(), family_kriging_baseline(family, x, y)[:, 5:].max()
    assert linear > 0.3 * variance and ceiling < 1e-5 * variance and np.abs(y).max() < 2.0
    by_hand = fn["a"][0] * ((x[0, 0, 0] - fn["c"][0, 0]) ** 2 + (x[0, 0, 1] - fn["c"][0, 1]) ** 2 - 0.5) + fn["b"][0]
    assert np.isclose(y[0, 0], by_hand)


def test_heldout_is_the_same_whatever_the_batch_size():
    task = L2LRegression(**TINY)
    a = torch.cat([X for X, _ in task.heldout(3)], dim=1)
    b = torch.cat([X for X, _ in task.heldout(8)], dim=1)
    assert torch.equal(a, b) and a.shape[1] == 8


def test_scoring_and_linear_baseline():
    task = L2LRegression(**TINY)
    _, target, x, y = task.episodes(4, np.random.default_rng(2))
    Y = torch.nan_to_num(target, nan=0.0)[..., None] + 0.5  # every scored step off by 0.5
    s, n = task.score(Y, target)
    assert n == 24 and np.isclose(s / n, 0.25)
    assert np.allclose(task.curve(Y.numpy(), target.numpy()), 4 * 0.25)
    assert np.isclose(task.loss(Y, target).item(), 0.25)
    # an exactly linear function is fit without error once four trials are known
    lin = 0.7 * x[..., 0] - 0.2 * x[..., 1] + 0.1
    err = linear_baseline(x, lin)
    assert err[:, 4:].max() < 1e-20 and err[:, 0].mean() > 0 and err[:, 3].mean() > 0


def test_train_evaluate_verify_and_report(tmp_path):
    for kind, params in (("lsnn", {"n_lif": 4, "n_alif": 4}), ("lstm", {"n_hidden": 4})):
        metrics = train("l2l-regression", kind, tmp_path / kind, steps=2, batch_size=2, progress=False,
                        model_params=params, task_params={**TINY, "answer_with_input": True})
        assert metrics["mse"] > 0 and len(metrics["mse_per_trial"]) == 6
        assert len(metrics["linear_baseline_mse_per_trial"]) == 6 and len(metrics["nonlinear_fit_mse_per_trial"]) == 6
        assert 0 < metrics["function_variance"] < 0.2
    model = export_checkpoint(tmp_path / "lsnn")
    report = verify(model, "cpu", progress=False)
    held = report["datasets"]["heldout"]
    assert report["passed"] and held["decisions"] == 8 * 6 and held["prediction_agreement"] == 1.0
    assert np.isclose(held["mse_reference"], held["mse_runtime"], rtol=1e-4)
    (metric,) = report["heldout_checks"]  # the module's mse, recorded at export, on the same 8 episodes
    assert metric["status"] == "pass" and metric["expected_from"] == "recorded at export"
    assert metric["expected"]["metric"] == "mse" and metric["expected"]["count"] == 8 * 6
    # against the module itself: its own mse on the same episodes
    report = verify(tmp_path / "lsnn", "cpu", progress=False)
    assert report["passed"] and report["heldout_checks"][0]["expected_from"] == "from the reference on the same examples"
    cfg = {"models": [str(tmp_path / "lsnn"), str(tmp_path / "lstm")], "runtimes": ["torch", "cpu"],
           "batch_sizes": [1], "heldout_limit": 8, "repeats": 1, "warmup": 0}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["bench", "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "## Learning to learn" in md and "linear predictor per episode" in md
    assert "fit of the function family per episode (ceiling)" in md
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    m = {x["name"]: x for x in res["models"]}
    assert m["lsnn"]["metric"] == "mse" and len(m["lsnn"]["learning_curve"]["mse_per_trial"]) == 6
    assert '<figure id="learning_curves">' in (tmp_path / "r" / "report.html").read_text()


def test_make_task_knows_it():
    assert make_task("l2l-regression", **TINY, answer_with_input=True).n_in == 40
    assert make_task("l2l-regression", **TINY, answer_with_input=False).n_in == 24
    with pytest.raises(ConfigError, match="score_ms"):
        L2LRegression(trial_ms=10, score_ms=20)
    with pytest.raises(ConfigError, match="unknown function family 'bumps'"):
        L2LRegression(family="bumps")
    with pytest.raises(ConfigError, match="n_hidden_fn must be even"):
        L2LRegression(family="sigmoid-windows", n_hidden_fn=5)
    with pytest.raises(ConfigError, match="tuning_width must be positive"):
        L2LRegression(tuning_width=0)


def test_baselines_are_computed_once_per_heldout_set(monkeypatch):
    from lsnn.reference.tasks import l2l
    task = L2LRegression(**TINY)
    calls = []
    real = l2l.family_kriging_baseline
    monkeypatch.setattr(l2l, "family_kriging_baseline", lambda *a: calls.append(1) or real(*a))
    first = task.curve_metrics(np.ones(6), 8 * 6, None)
    again = task.curve_metrics(np.ones(6), 8 * 6, None)
    assert first == again and len(calls) == 1
    assert set(first) == {"mse_per_trial", "linear_baseline_mse_per_trial", "nonlinear_fit_mse_per_trial",
                          "function_variance", "episodes"}
