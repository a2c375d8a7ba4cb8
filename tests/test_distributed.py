"""Data-parallel training under torchrun: two processes on slices of the global batch train the
same model as one process on the whole batch (the same gradients up to float32 summation order),
write the same files, and resume."""
import json
import subprocess
import sys

import pytest
import torch

from lsnn.compiler.cli import main
from lsnn.reference import checkpoint, distributed
from lsnn.reference.errors import ConfigError

from test_train import TINY_MODEL, TINY_TASK

STEPS, HALF, BATCH = 4, 2, 8


def train_args(out, steps: int, batch_size: int = BATCH, *more: str) -> list[str]:
    return ["train", "--task", "store-recall", "--model", "lsnn", "--out", str(out), "--steps", str(steps),
            "--batch-size", str(batch_size), "--quiet", *TINY_TASK, *TINY_MODEL, *more]


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """``lsnn`` under ``torchrun --standalone`` with ``processes`` local processes."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "lsnn.compiler.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def log(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run (half of the steps, then resumed with the total) on one process, and on two
    under torchrun: the two folders."""
    root = tmp_path_factory.mktemp("distributed")
    one, two = root / "one", root / "two"
    assert main(train_args(one, HALF)) == 0
    assert main(train_args(one, STEPS, BATCH, "--resume")) == 0
    first = torchrun(*train_args(two, HALF))
    assert first.returncode == 0, first.stderr
    resumed = torchrun(*train_args(two, STEPS, BATCH, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["processes"] == 2  # the report printed once, by rank 0
    return one, two


def test_two_processes_train_the_same_weights_as_one(runs):
    one, two = runs
    a, b = checkpoint.load(one)[0].state_dict(), checkpoint.load(two)[0].state_dict()  # plain names, no module.
    assert a.keys() == b.keys()
    for name in a:  # measured: at most 1.5e-8 apart (float32 rounding of the gradient sums)
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-7, msg=name)


def test_two_processes_log_the_losses_of_one(runs):
    one, two = runs
    la, lb = log(one), log(two)
    assert [r["step"] for r in lb] == list(range(1, STEPS + 1))  # the resumed run logs each step once
    for ra, rb in zip(la, lb):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-5)  # logged to 5 decimals
        assert rb["accuracy"] == ra["accuracy"] and rb["rate_hz"] == pytest.approx(ra["rate_hz"], abs=0.01)
    assert len({r["loss"] for r in la}) > 1  # it learns: the losses change


def test_two_processes_record_their_budget(runs):
    one, two = runs
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in runs)
    assert (m1["processes"], m2["processes"]) == (1, 2)
    assert m2["samples_seen"] == m1["samples_seen"] == STEPS * BATCH and m2["steps"] == STEPS
    assert m2["accuracy"] == m1["accuracy"]
    config = json.loads((two / "config.json").read_text())
    assert config["processes"] == 2 and config["resumed"][0]["processes"] == 2
    assert not list(two.glob(".*.tmp"))


def test_an_indivisible_batch_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    r = torchrun(*train_args(out, 1, 5))
    assert r.returncode != 0
    assert "batch size 5 does not divide among the 2 processes of torchrun" in r.stderr
    assert not out.exists()


def test_the_backend_follows_the_device():
    assert distributed.backend(torch.device("cpu")) == "gloo"
    assert distributed.backend(torch.device("cuda", 1)) == "nccl"


def test_one_process_without_torchrun_and_an_incomplete_environment_is_named(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with distributed.session() as parallel:
        assert (parallel.rank, parallel.world_size, parallel.is_main) == (0, 1, True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="RANK, LOCAL_RANK not set"):
        with distributed.session():
            pass


def test_each_local_process_gets_its_own_equal_share_of_the_cpus():
    cpus = [0, 1, 2, 3, 4]
    shares = [distributed.cpu_share(cpus, r, 2) for r in range(2)]
    assert shares == [[0, 1], [2, 3]]
    assert distributed.cpu_share([4, 7], 1, 2) == [7]  # the CPUs taskset left, not 0 .. n-1
    assert distributed.cpu_share([0, 1], 1, 3) == [0, 1]  # more processes than CPUs: no pinning


def test_the_reduction_sums_values_and_averages_a_tensor_with_this_process_gradient():
    x = torch.tensor([2.0, 4.0], requires_grad=True)
    sums, mean = distributed.OneProcess().reduce((1.0, 3.0), x)
    assert sums == (1.0, 3.0) and mean is x
    assert distributed.OneProcess().reduce((5.0,)) == ((5.0,), None)
