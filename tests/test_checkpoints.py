"""The committed checkpoints load, and their held-out accuracy is what metrics.json claims."""
import json

import pytest

from lsnn.reference import checkpoint
from lsnn.reference.paths import MODELS_DIR as MODELS, committed_models
from lsnn.reference.tasks import DEFAULT_DATA_DIR, make_task
from lsnn.reference.train import evaluate

COMMITTED = committed_models()


def test_the_committed_models_are_the_papers():
    assert COMMITTED == sorted(["store-recall-lsnn", "store-recall-lif", "store-recall-lstm", "smnist-lsnn",
                                "smnist-lif", "smnist-lstm", "l2l-lsnn", "l2l-lstm"])


def metrics(name):
    return json.loads((MODELS / name / "metrics.json").read_text())


@pytest.mark.parametrize("name", COMMITTED)
def test_checkpoint_reproduces_its_accuracy(name, request):
    model, config, _ = checkpoint.load(MODELS / name)
    task = make_task(**config["task"])
    if task.name == "smnist":
        task.data_dir = request.getfixturevalue("fashion_mnist")
        limit = 1000
    elif task.name == "l2l-regression":
        limit = None  # all 256 held-out episodes: the very set metrics.json was measured on
    else:
        limit = 256  # the first 256 of the 512 held-out sequences
    got = evaluate(model, task, limit=limit)[task.metric]
    claimed = metrics(name)[task.metric]
    if task.metric == "mse":
        assert abs(got - claimed) <= 1e-4 * claimed, (got, claimed)
    else:  # a subset of the same held-out set: binomial noise only
        assert abs(got - claimed) < 0.06, (got, claimed)


def test_lsnn_remembers_and_lif_does_not():
    """The paper's central claim: only threshold adaptation bridges the >= 1 s delay."""
    lsnn, lif = metrics("store-recall-lsnn"), metrics("store-recall-lif")
    assert lsnn["accuracy"] >= 0.95
    assert lif["accuracy"] <= 0.60
    for m in (lsnn, lif):
        assert m["train_seconds"] <= 30 * 60
    cfg_lsnn = json.loads((MODELS / "store-recall-lsnn" / "config.json").read_text())
    cfg_lif = json.loads((MODELS / "store-recall-lif" / "config.json").read_text())
    assert cfg_lsnn["training"] == cfg_lif["training"] and cfg_lsnn["task"] == cfg_lif["task"]
    size = lambda c: c["model"]["n_lif"] + c["model"]["n_alif"]
    assert size(cfg_lsnn) == size(cfg_lif) and cfg_lif["model"]["n_alif"] == 0
    assert cfg_lsnn["task"]["min_delay_ms"] >= 1000


SMNIST = ("smnist-lsnn", "smnist-lif", "smnist-lstm")


def test_smnist_checkpoints_share_one_budget():
    """The sequential-image checkpoints are compared at an equal, recorded training budget: the same
    task, steps, batch and samples seen, each on one process."""
    configs = [json.loads((MODELS / name / "config.json").read_text()) for name in SMNIST]
    budgets = [{k: metrics(name)[k] for k in ("steps", "batch_size", "samples_seen", "processes")} for name in SMNIST]
    assert all(b == budgets[0] for b in budgets) and budgets[0]["samples_seen"] == 12_000 * 64, budgets
    assert all(c["task"] == configs[0]["task"] for c in configs)
    assert all(metrics(name)["train_seconds"] > 0 for name in SMNIST)


def test_smnist_training_curve_rises():
    for name in SMNIST:
        log = [json.loads(l) for l in (MODELS / name / "train_log.jsonl").read_text().splitlines()]
        n = len(log) // 10
        first = sum(r["accuracy"] for r in log[:n]) / n
        last = sum(r["accuracy"] for r in log[-n:]) / n
        assert last > first + 0.1, (name, first, last)
        assert metrics(name)["accuracy"] > 0.3


@pytest.mark.parametrize("name", COMMITTED)
@pytest.mark.parametrize("streaming, runtime", [(False, "ort"), (True, "ort"), (False, "cpu")])
def test_checkpoint_exports_and_passes_parity(name, streaming, runtime, tmp_path, request):
    from lsnn.compiler.cli import main

    if "smnist" in name:
        request.getfixturevalue("fashion_mnist")
    path = tmp_path / "model.onnx"
    args = ["export", str(MODELS / name), "-o", str(path)] + (["--streaming"] if streaming else [])
    assert main(args) == 0
    from lsnn.targets.verify import verify
    from lsnn.compiler.onnx.export import metadata
    from lsnn.compiler.onnx.validate import load

    key = "mse" if "mse" in metrics(name) else "accuracy"
    assert metadata(load(path))["lsnn.metrics"][key] == metrics(name)[key]
    # the export against its PyTorch module, on the held-out examples of the module's metric recorded at
    # export (64, 256 for smnist): the file's metric must match both the module's and the record
    report = verify(path, runtime, reference=MODELS / name, data_dir=DEFAULT_DATA_DIR if "smnist" in name else None,
                    progress=False)
    assert report["passed"], report
    assert [(m["status"], m["expected_from"]) for m in report["heldout_checks"]] == \
        [("pass", "from the reference on the same examples"), ("pass", "recorded at export")]
    assert report["heldout_checks"][0]["measured"]["examples"] == (256 if "smnist" in name else 64)
    held = report["datasets"]["heldout"]
    assert held["decisions"] >= 64 and held["prediction_agreement"] >= 0.95
    if "mse_reference" in held:  # learning to learn: the compiled episode gives the reference's errors
        assert abs(held["mse_runtime"] - held["mse_reference"]) <= 1e-3 * held["mse_reference"]


@pytest.mark.parametrize("name, core", [(n, c) for n in ("smnist-lsnn", "smnist-lstm")
                                         for c in ("cortex-m4", "cortex-m7", "cortex-m55")] +
                         [("smnist-lif", "cortex-m4"), ("l2l-lsnn", "cortex-m4"), ("l2l-lstm", "cortex-m4")])
def test_checkpoints_pass_parity_on_cortex_m(name, core, tmp_path, request, arm_toolchain):
    """Held-out Fashion-MNIST sequences (840 steps) or learning-to-learn episodes (500 steps)
    and random inputs, run under QEMU."""
    from lsnn.targets.verify import verify
    if "smnist" in name:
        request.getfixturevalue("fashion_mnist")
    report = verify(MODELS / name, core, data_dir=DEFAULT_DATA_DIR, limit=4, progress=False)  # against the module
    assert report["passed"], report
    assert report["heldout_checks"][0]["status"] == "pass"
    assert report["datasets"]["heldout"]["prediction_agreement"] == 1.0


L2L = ("l2l-lsnn", "l2l-lstm")


@pytest.mark.parametrize("name", L2L)
def test_learners_learn_within_an_episode(name):
    """On held-out functions the error falls across an episode's trials (weights fixed), and from
    the second trial on it is below that of the least-squares plane fit to the episode's trials so
    far: the paraboloid family, which no plane follows, is learnt from the network's own state."""
    m = metrics(name)
    curve, plane = m["mse_per_trial"], m["linear_baseline_mse_per_trial"]
    assert curve[0] > 3 * sum(curve[5:]) / len(curve[5:])
    assert all(c < p for c, p in zip(curve[1:], plane[1:])), list(zip(curve, plane))


def test_learners_share_one_budget():
    configs = [json.loads((MODELS / name / "config.json").read_text()) for name in L2L]
    budgets = [{k: metrics(name)[k] for k in ("steps", "batch_size", "samples_seen", "processes")} for name in L2L]
    assert budgets[0] == budgets[1] and budgets[0]["samples_seen"] == 20_000 * 32, budgets
    assert configs[0]["task"] == configs[1]["task"] and configs[0]["task"]["family"] == "paraboloid"
