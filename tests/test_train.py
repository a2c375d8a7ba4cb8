import json

import pytest

from lsnn.reference.errors import ConfigError
import torch

from lsnn.compiler.cli import main
from lsnn.reference import LIFNet, LSNN, LSTMNet, build_model, checkpoint
from lsnn.reference.train import train

TINY_TASK = ["--task-param", "period_ms=10", "--task-param", "n_periods=4", "--task-param", "min_delay_ms=10",
             "--task-param", "heldout_size=16"]
TINY_MODEL = ["--model-param", "n_lif=4", "--model-param", "n_alif=4"]


def test_models_default_to_the_papers_smnist_network():
    m = LSNN()
    c = m.config
    assert (c.n_in, c.n_lif, c.n_alif, c.n_out) == (80, 120, 100, 10)
    assert m.alif.beta[:120].abs().sum() == 0 and torch.allclose(m.alif.beta[120:], torch.tensor(1.8))
    assert torch.allclose(m.alif.alpha, torch.tensor(0.951229424)) and torch.allclose(m.alif.rho, torch.tensor(0.998572466))
    assert torch.diagonal(m.alif.R).abs().sum() == 0 and m.alif.R.abs().sum() > 0  # no self-connections
    lif = LIFNet()
    assert lif.config.n_alif == 0 and lif.config.n_lif == 220 and lif.alif.beta.abs().sum() == 0
    out = LSTMNet()(torch.zeros(5, 2, 80))
    assert out.Y.shape == (5, 2, 10) and out.Z is None


def test_lsnn_forward_shapes_and_gradients():
    m = build_model("lsnn", n_in=6, n_lif=3, n_alif=2, n_out=4)
    X = (torch.rand(30, 2, 6) < 0.5).float()
    out = m(X)
    assert out.Y.shape == (30, 2, 4) and out.Z.shape == (30, 2, 5)
    out.Y.sum().backward()
    assert m.alif.W.grad.abs().sum() > 0 and m.readout.W.grad.abs().sum() > 0
    assert torch.diagonal(m.alif.R_raw.grad).abs().sum() == 0


def test_build_model_rejects_unknown():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("transformer")
    with pytest.raises(ConfigError, match="no parameter"):
        build_model("lsnn", n_neurons=3)


def test_train_cli_writes_checkpoint_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--task", "store-recall", "--model", "lsnn", "--out", str(out), "--steps", "3",
            "--batch-size", "4", "--quiet", *TINY_TASK, *TINY_MODEL]
    assert main(args) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["seed"] == 0 and config["training"]["steps"] == 3
    assert config["model"]["n_lif"] == 4 and config["task"]["period_ms"] == 10
    assert config["command"][:2] == ["lsnn", "train"] and "git_commit" in config
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and "alif" in metrics["firing_rate_hz"]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert not list(out.glob(".*.tmp"))
    before = checkpoint.load(out)[2]["model"]["alif.W"].clone()
    args[args.index("--steps") + 1] = "5"
    assert main(args + ["--resume"]) == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    model, config, state = checkpoint.load(out)
    assert state["step"] == 5 and not torch.equal(before, model.alif.W.detach())
    assert config["command"][:2] == ["lsnn", "train"] and "--resume" in config["resumed"][0]["command"]
    # a new run never overwrites a checkpoint silently
    assert main(args) == 2
    assert "already holds a checkpoint" in capsys.readouterr().err


def test_interrupt_then_resume_equals_one_run(tmp_path, monkeypatch, tiny_store_recall):
    from lsnn.reference.tasks import StoreRecall

    kw = dict(batch_size=4, progress=False, model_params={"n_lif": 3, "n_alif": 3}, task_params=tiny_store_recall)
    train("store-recall", "lsnn", tmp_path / "a", steps=5, **kw)
    real_batch, calls = StoreRecall.batch, []

    def batch_then_interrupt(self, *a, **k):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_batch(self, *a, **k)

    monkeypatch.setattr(StoreRecall, "batch", batch_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train("store-recall", "lsnn", tmp_path / "b", steps=5, **kw)
    assert checkpoint.load(tmp_path / "b")[2]["step"] == 3
    assert not (tmp_path / "b" / "metrics.json").exists()
    monkeypatch.setattr(StoreRecall, "batch", real_batch)
    train("store-recall", "lsnn", tmp_path / "b", steps=5, resume=True, progress=False)
    wa = checkpoint.load(tmp_path / "a")[0].state_dict()
    wb = checkpoint.load(tmp_path / "b")[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]


def test_lstm_trains_on_tiny_smnist(tmp_path, tiny_mnist):
    metrics = train("smnist", "lstm", tmp_path / "m", steps=2, batch_size=4, data_dir=str(tiny_mnist), progress=False,
                    model_params={"n_hidden": 8}, task_params={"cue_steps": 4})
    assert metrics["decisions"] == 12 and "firing_rate_hz" not in metrics


def test_cli_errors_are_named(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    assert main(["train", "--task", "store-recall", "--model", "lsnn", "--out", str(tmp_path / "x"),
                 "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_resume_after_a_kill_logs_each_step_once(tmp_path, tiny_store_recall):
    """A kill between two checkpoints leaves log lines past the checkpoint (and maybe half a line):
    the resumed run drops them, so the log holds each step once."""
    kw = dict(batch_size=4, progress=False, model_params={"n_lif": 3, "n_alif": 3}, task_params=tiny_store_recall)
    train("store-recall", "lsnn", tmp_path, steps=3, **kw)
    log = tmp_path / "train_log.jsonl"
    with open(log, "a") as f:  # what the killed run logged after its last checkpoint (step 3)
        f.write('{"step": 4, "loss": 0.1, "accuracy": 0.5}\n{"step": 5, "loss": 0.1, "accuracy": 0.5}\n{"step": 6, "lo')
    train("store-recall", "lsnn", tmp_path, steps=5, resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_of_a_corrupt_config_names_the_file(tmp_path, capsys, tiny_checkpoint):
    (tiny_checkpoint / "config.json").write_text('{"task": {"name": "store-recall"')
    args = ["train", "--task", "store-recall", "--model", "lsnn", "--out", str(tiny_checkpoint), "--resume"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{tiny_checkpoint / 'config.json'}: corrupt checkpoint configuration" in err


def test_data_dir_is_ignored_by_tasks_without_data(tmp_path, tiny_store_recall):
    metrics = train("store-recall", "lsnn", tmp_path, steps=1, batch_size=2, progress=False, data_dir="/nowhere",
                    model_params={"n_lif": 2, "n_alif": 2}, task_params=tiny_store_recall)
    assert metrics["steps"] == 1


def test_unknown_task_parameter_is_named(tmp_path, capsys):
    args = ["train", "--task", "store-recall", "--model", "lsnn", "--out", str(tmp_path / "x"), "--task-param",
            "periods=3"]
    assert main(args) == 2
    assert "task 'store-recall' has no parameter(s) ['periods']" in capsys.readouterr().err
