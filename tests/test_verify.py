"""lsnn verify catches a wrong model: the reference comes from the model's source (a checkpoint
or a PyTorch module), the held-out metric recorded at export is checked, NaN never agrees."""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lsnn.compiler.cli import main
from lsnn.compiler.onnx.export import export, export_checkpoint, metadata
from lsnn.reference import LSNN, LSNNConfig, LSTMNet, LSTMConfig, checkpoint
from lsnn.reference.heldout import MSE_RTOL, HeldoutMetric, record_of
from lsnn.reference.paths import MODELS_DIR
from lsnn.reference.tasks import make_task
from lsnn.reference.train import evaluate
from lsnn.targets import Runtime, open_runtime
from lsnn.targets.parity import Probe, add_probes, compare
from lsnn.targets.verify import format_report, verify

CHECKPOINT = MODELS_DIR / "store-recall-lsnn"  # the fastest committed model: 1400 steps of 100 neurons
EXAMPLES = 16  # held-out sequences recorded at export (the default is 64)


def swap_readout_rows(model: onnx.ModelProto) -> onnx.ModelProto:
    """The readout's two output rows exchanged: every store-recall answer inverted."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    readout_w = next(n for n in out.graph.node if n.op_type == "LI").input[1]
    for i, t in enumerate(out.graph.initializer):
        if t.name == readout_w:
            out.graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t)[::-1].copy(), t.name))
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify")
    model = export_checkpoint(CHECKPOINT, heldout=EXAMPLES)
    onnx.save(model, str(d / "good.onnx"))
    onnx.save(swap_readout_rows(model), str(d / "swapped.onnx"))
    return d


def test_export_records_the_modules_heldout_metric(exported):
    record, why = record_of(metadata(onnx.load(str(exported / "good.onnx"))))
    assert why == "" and record.metric == "accuracy" and record.examples == EXAMPLES and record.batch_size == 64
    assert record.digest.startswith("sha256:") and record.count == EXAMPLES  # one decision per sequence
    model, config, _ = checkpoint.load(CHECKPOINT)
    assert record.value == evaluate(model, make_task(**config["task"]), limit=EXAMPLES)["accuracy"]


def test_swapped_readout_fails_as_onnx_file(exported, capsys):
    assert main(["verify", str(exported / "good.onnx")]) == 0
    out = capsys.readouterr().out
    assert "expected accuracy 1.0000 (16/16 decisions) recorded at export: PASS" in out
    assert main(["verify", str(exported / "swapped.onnx")]) == 1
    out = capsys.readouterr().out
    assert ("held-out accuracy 0.0000 (0/16 decisions) on the runtime, expected accuracy 1.0000 (16/16 decisions) "
            "recorded at export: differs by 16 correct decisions (at most 1 allowed: one rounding flip): FAIL") in out
    assert out.rstrip().endswith("FAIL")


def test_swapped_readout_fails_against_the_checkpoint(exported, capsys):
    args = ["--limit", str(EXAMPLES), "--reference", str(CHECKPOINT)]
    assert main(["verify", str(exported / "swapped.onnx"), *args]) == 1
    out = capsys.readouterr().out
    assert f"reference: PyTorch, checkpoint {CHECKPOINT}" in out
    assert "outputs differ before the first spike divergence" in out  # the readout, at every step
    assert "expected accuracy 1.0000 (16/16 decisions) from the reference on the same examples: differs by 16" in out
    assert main(["verify", str(exported / "good.onnx"), *args]) == 0


def test_checkpoint_as_model_is_exported_and_compared_with_its_module(capsys):
    assert main(["verify", str(CHECKPOINT), "--limit", "8", "--target", "cpu"]) == 0
    out = capsys.readouterr().out
    assert f"parity of cpu on the export of checkpoint {CHECKPOINT}" in out
    assert "from the reference on the same examples: PASS" in out and "recorded at export" not in out


def small_lsnn(seed=0, **kw):
    torch.manual_seed(seed)
    return LSNN(LSNNConfig(**{"n_in": 40, "n_lif": 6, "n_alif": 6, "n_out": 2, "thr": 0.05, **kw}))


def test_a_pytorch_module_is_a_model_and_a_reference():
    module = small_lsnn()
    report = verify(module, "ort", task="store-recall", limit=8, progress=False)
    assert report["passed"] and report["reference"] == "PyTorch, the LSNN module given", report
    assert report["datasets"]["heldout"]["sequences"] == 8 and report["heldout_checks"][0]["status"] == "pass"
    # the same architecture with other weights: the file is not the module's export
    report = verify(export(small_lsnn(seed=1)), "ort", reference=module, progress=False)
    assert not report["passed"] and report["datasets"]["random-spikes"]["failures"]
    lstm = LSTMNet(LSTMConfig(n_in=5, n_hidden=7, n_out=3))
    assert verify(lstm, "ort", progress=False)["passed"]
    assert verify(export(lstm, streaming=True), "ort", reference=lstm, progress=False)["passed"]


def test_reference_must_be_a_source(exported):
    from lsnn.reference.errors import ConfigError

    with pytest.raises(ConfigError, match="not a checkpoint folder or a PyTorch module"):
        verify(exported / "good.onnx", "ort", reference=exported / "good.onnx", progress=False)


def test_file_without_recorded_metric_says_it_was_not_checked(capsys, tmp_path):
    path = tmp_path / "hand.onnx"
    onnx.save(export(small_lsnn()), str(path))  # no checkpoint, no record: as a hand-built model
    assert main(["verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("held-out metric not checked: no held-out data was run (no task is known: pass --task); the model "
            "records no held-out metric (not exported by lsnn export from a checkpoint)") in out
    assert main(["verify", str(path), "--task", "store-recall", "--limit", "4"]) == 0
    assert "held-out metric not checked: the model records no held-out metric" in capsys.readouterr().out


def test_other_examples_than_recorded_are_not_compared(exported):
    report = verify(exported / "good.onnx", "ort", limit=8, progress=False)
    assert report["passed"]
    assert report["heldout_checks"] == [{**report["heldout_checks"][0], "status": "not checked"}]
    assert "8 held-out examples, recorded on 16" in report["heldout_checks"][0]["message"]


def test_unmeasurable_metric_is_recorded_with_its_reason(tmp_path):
    model = export_checkpoint(MODELS_DIR / "smnist-lstm", data_dir=str(tmp_path / "nowhere"))
    record, why = record_of(metadata(model))
    assert record is None and why.startswith("no held-out metric was recorded at export: data directory")
    assert str(tmp_path / "nowhere") in why


def test_agreement_rules():
    base = HeldoutMetric("accuracy", 200, 256, 256, 64, "sha256:x")
    assert base.difference(HeldoutMetric("accuracy", 201, 256, 256, 64, "sha256:x")) is None  # one flip
    assert "differs by 2 correct decisions" in base.difference(HeldoutMetric("accuracy", 198, 256, 256, 64, "sha256:x"))
    assert "another data folder" in base.same_examples(HeldoutMetric("accuracy", 200, 256, 256, 64, "sha256:y"))
    mse = HeldoutMetric("mse", 10.0, 100, 4, 64, "d")
    assert mse.difference(HeldoutMetric("mse", 10.0 * (1 + MSE_RTOL / 2), 100, 4, 64, "d")) is None
    assert "relative difference" in mse.difference(HeldoutMetric("mse", 10.0 * (1 + 2 * MSE_RTOL), 100, 4, 64, "d"))
    assert "nan" in mse.difference(HeldoutMetric("mse", float("nan"), 100, 4, 64, "d"))
    assert HeldoutMetric.from_json(json.loads(json.dumps(mse.to_json()))) == mse


class Poisoned(Runtime):
    """onnxruntime on the probed model, with NaN written into one output."""

    def __init__(self, model, output, index):
        self.inner = open_runtime(add_probes(model)[0], "ort")
        self.name, self.output, self.index = "poisoned", output, index

    def run(self, inputs, outputs=None):
        out = self.inner.run(inputs, outputs)
        out[self.output] = out[self.output].copy()
        out[self.output][self.index] = np.nan
        return out


def test_nan_in_the_runtime_output_fails_naming_it():
    model = export(small_lsnn())
    report = verify(model, Poisoned(model, "Y", (3, 1, 0)), reference=small_lsnn(), progress=False)
    assert not report["passed"]
    failures = report["datasets"]["random-spikes"]["failures"]
    assert "output 'Y': the runtime gives NaN at step 3, sequence 1 (1 non-finite values; NaN never counts " \
           "as agreement)" in failures
    assert "output 'Y'" in format_report(report)


def test_spikes_compared_with_nan_differ():
    model = export(small_lsnn())
    report = verify(model, Poisoned(model, "Z", (0, 0, 0)), progress=False)
    d = report["datasets"]["random-spikes"]
    assert not report["passed"] and d["spike_agreement"] < 1 and d["first_divergence_step"] == 0
    assert any(f.startswith("output 'Z': the runtime gives NaN at step 0, sequence 0") for f in d["failures"])


def test_nan_in_the_reference_fails_too():
    T, B, H = 4, 2, 3
    p = Probe("alif", "Z", "V", "A")
    ref = {"Z": np.zeros((T, B, H), np.float32), "V": np.zeros((T, B, H), np.float32),
           "A": np.full((T, B, H), 0.1, np.float32), "Y": np.ones((T, B, 2), np.float32)}
    got = {k: v.copy() for k, v in ref.items()}
    ref["V"][2, 1, 0] = np.nan
    r = compare(ref, got, [p], ["Y"])
    assert "output 'V': the reference gives NaN at step 2, sequence 1" in r.failures[0]
    assert any("V differ before the first spike divergence: relative error inf" in f for f in r.failures)
    # a spike that differs where the reference's margin is NaN is no rounding flip
    got["Z"][2, 1, 0] = 1.0
    assert any("not a rounding flip" in f for f in compare(ref, got, [p], ["Y"]).failures)
