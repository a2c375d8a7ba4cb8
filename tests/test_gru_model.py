"""The GRU baseline (``lsnn train --model gru``): trained on every task the LSTM trains on, exported as
ONNX's ``GRU`` node, compiled and checked against its PyTorch module on the cpu and on a Cortex-M4."""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from lsnn.compiler.cli import main
from lsnn.compiler.onnx.export import export, export_checkpoint
from lsnn.reference import GRUNet, build_model, checkpoint
from lsnn.reference.train import DEFAULTS, model_defaults, train
from lsnn.targets import open_runtime

TINY_TASK = ["--task-param", "period_ms=10", "--task-param", "n_periods=4", "--task-param", "min_delay_ms=10",
             "--task-param", "heldout_size=8"]


@pytest.fixture(scope="module")
def gru_checkpoint(tmp_path_factory):
    """A GRU of 6 units trained 2 steps on a tiny store-recall, through the command line."""
    out = tmp_path_factory.mktemp("gru") / "sr-gru"
    assert main(["train", "--task", "store-recall", "--model", "gru", "--out", str(out), "--steps", "2",
                 "--batch-size", "4", "--model-param", "n_hidden=6", "--quiet", *TINY_TASK]) == 0
    return out


def test_train_cli_writes_a_gru_checkpoint(gru_checkpoint):
    config = json.loads((gru_checkpoint / checkpoint.CONFIG).read_text())
    assert config["model"] == {"kind": "gru", "n_in": 40, "n_hidden": 6, "n_out": 2}
    model, _, state = checkpoint.load(gru_checkpoint)
    assert isinstance(model, GRUNet) and state["step"] == 2
    assert sorted(state["model"]) == sorted(["gru.weight_ih_l0", "gru.weight_hh_l0", "gru.bias_ih_l0",
                                             "gru.bias_hh_l0", "readout.weight", "readout.bias"])
    assert state["optimizer"]["state"]  # Adam stepped every parameter


def test_every_task_sizes_the_gru_as_the_lstm():
    for task in DEFAULTS:
        assert model_defaults(task, "gru") == model_defaults(task, "lstm") and "n_hidden" in model_defaults(task, "gru")


def test_gru_trains_on_tiny_smnist_and_l2l(tmp_path, tiny_mnist):
    metrics = train("smnist", "gru", tmp_path / "s", steps=2, batch_size=4, data_dir=str(tiny_mnist), progress=False,
                    model_params={"n_hidden": 8}, task_params={"cue_steps": 4})
    assert metrics["decisions"] == 12 and "firing_rate_hz" not in metrics
    tiny_l2l = {"n_trials": 6, "trial_ms": 10, "score_ms": 5, "n_per_var": 4, "heldout_size": 4}
    metrics = train("l2l-regression", "gru", tmp_path / "l", steps=2, batch_size=2, progress=False,
                    model_params={"n_hidden": 4}, task_params=tiny_l2l)
    assert metrics["mse"] > 0 and len(metrics["mse_per_trial"]) == 6


def test_unknown_model_is_refused_with_the_list(tmp_path, capsys):
    assert main(["train", "--task", "store-recall", "--model", "transformer", "--out", str(tmp_path / "x")]) == 2
    assert "unknown model 'transformer'; choose one of gru, lif, lsnn, lstm" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_export_is_one_onnx_gru_node_with_torchs_reset_form():
    torch.manual_seed(0)
    net = build_model("gru", n_in=5, n_hidden=7, n_out=3).eval()
    m = export(net, streaming=True)
    (gru,) = [n for n in m.graph.node if n.op_type == "GRU"]
    attrs = {a.name: helper.get_attribute_value(a) for a in gru.attribute}
    assert attrs == {"hidden_size": 7, "linear_before_reset": 1} and gru.name == "gru"
    assert [i.name for i in m.graph.input] == ["X", "initial_h"] and [o.name for o in m.graph.output] == ["Y", "final_h"]
    X = np.random.default_rng(0).normal(size=(30, 2, 5)).astype(np.float32)
    h0 = np.random.default_rng(1).normal(size=(1, 2, 7)).astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(X), torch.from_numpy(h0))
    for rt in ("ort", "torch"):
        out = open_runtime(m, rt).run({"X": X, "initial_h": h0})
        np.testing.assert_allclose(out["Y"], ref.Y.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out["final_h"], ref.state.numpy(), rtol=1e-5, atol=1e-6)


def test_checkpoint_compiles_for_the_cpu_and_matches_pytorch(gru_checkpoint, capsys):
    proto = export_checkpoint(gru_checkpoint, heldout=4)
    onnx.checker.check_model(proto, full_check=True)
    assert main(["verify", str(gru_checkpoint), "--target", "cpu", "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("PASS") and "FAIL" not in out


@pytest.mark.usefixtures("arm_toolchain")
def test_checkpoint_matches_pytorch_on_a_cortex_m4(gru_checkpoint, capsys):
    """Under QEMU (runs in CI, where a missing toolchain fails): held-out and random inputs."""
    assert main(["verify", str(gru_checkpoint), "--target", "cortex-m4", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "parity of cortex-m4" in out and out.rstrip().endswith("PASS") and "FAIL" not in out
