"""lsnn.compiler.verify and ``lsnn verify --module``: a user's network against its own PyTorch module, per ALIF layer."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
import user_models

from lsnn import compiler
from lsnn.compiler.cli import main
from lsnn.reference import ALIF
from lsnn.reference.errors import ConfigError, LsnnError
from lsnn.targets.parity import add_probes
from lsnn.targets.verify import verify as verify_file

T, B = 30, 2


def _alif_layers(module) -> list[str]:
    return [n for n, m in module.named_modules() if isinstance(m, ALIF)]


@pytest.fixture(scope="module")
def exported():
    """Each architecture: its module, inputs and dynamic export."""
    out = {}
    for name in user_models.ARCHITECTURES:
        module, x = user_models.build(name), user_models.inputs(T, B)
        out[name] = module, x, compiler.export(module, x)
    return out


@pytest.mark.parametrize("name", list(user_models.ARCHITECTURES))
def test_every_architecture_passes_on_onnxruntime_per_layer(exported, name):
    module, x, proto = exported[name]
    report = compiler.verify(module, proto, x)
    assert report.passed, str(report)
    assert report.data["alif_nodes"] == _alif_layers(module)  # every layer compared
    entry = report.data["datasets"]["given"]
    assert entry["spike_agreement"] == 1.0 and entry["steps"] == T and entry["sequences"] == B


@pytest.mark.parametrize("name", list(user_models.ARCHITECTURES))
def test_every_architecture_passes_compiled_for_cpu(name):
    module, x = user_models.build(name), user_models.inputs(T, B)
    report = compiler.verify(module, "cpu", x)  # exported and compiled here
    assert report.passed, str(report)
    assert report.data["runtime"] == "cpu" and report.data["alif_nodes"] == _alif_layers(module)
    assert "the export of the" in report.data["model"]


def test_passes_on_cortex_m4(arm_toolchain):
    module, x = user_models.build("linear-front"), user_models.inputs(T, B)
    report = compiler.verify(module, "cortex-m4", x)
    assert report.passed, str(report)
    assert report.data["alif_nodes"] == ["alif"]


def test_a_perturbed_layer_fails_and_is_named(exported):
    module, x, proto = exported["stacked"]
    changed = user_models.build("stacked")
    with torch.no_grad():
        changed.alif2.W += 0.05 * torch.randn_like(changed.alif2.W)
    report = compiler.verify(changed, proto, x)
    assert not report.passed
    failures = report.data["datasets"]["given"]["failures"]
    assert failures and all("'alif2'" in f for f in failures), failures  # alif1 still agrees
    text = str(report)
    assert "node 'alif2'" in text and text.endswith("FAIL")


def test_a_module_with_another_layer_name_is_refused(exported):
    module, x, proto = exported["linear-front"]
    renamed = torch.nn.Sequential()  # the same layers under other names
    renamed.add_module("front", module.encoder)
    renamed.add_module("spiking", module.alif)
    renamed.add_module("out", module.readout)
    with pytest.raises(LsnnError, match="ALIF node 'alif' .* no ALIF layer of that name .*its ALIF layers: spiking"):
        compiler.verify(renamed, proto, x)


def test_a_compiled_artifact_is_compared_per_layer_when_it_exposes_the_probes(exported, tmp_path):
    module, x, proto = exported["linear-front"]
    plain = compiler.compile(proto, "cpu")
    report = compiler.verify(module, plain, x)
    assert report.passed and report.data["alif_nodes"] == []
    assert "exposes no ALIF layer's spikes" in str(report)  # says that only the outputs were compared
    probed = compiler.compile(add_probes(proto)[0], "cpu").save(tmp_path / "art")
    report = compiler.verify(module, str(probed), x)  # the folder
    assert report.passed and report.data["alif_nodes"] == ["alif"], str(report)
    report = compiler.verify(module, str(probed))  # random inputs of the artifact's shape
    assert report.passed and report.data["alif_nodes"] == ["alif"], str(report)


def test_input_errors_name_what_is_wrong(exported):
    module, x, proto = exported["stacked"]
    with pytest.raises(LsnnError, match=r"input 'x' has shape \[30, 2, 5\], the model takes \['T', 'B', 12\]"):
        compiler.verify(module, proto, x[..., :5])
    with pytest.raises(ConfigError, match="inputs \\['y'\\] do not match the model's inputs \\(x\\): no 'x'"):
        compiler.verify(module, proto, {"y": x})
    with pytest.raises(ConfigError, match="reference: expected a torch.nn.Module, got str"):
        compiler.verify("net", proto, x)
    with pytest.raises(LsnnError, match="model file not found: nowhere.onnx \\(nor is it a target"):
        compiler.verify(module, "nowhere.onnx", x)


def test_random_inputs_are_said(exported):
    module, _, proto = exported["lif-then-adaptive"]
    report = compiler.verify(module, proto)
    assert report.passed, str(report)
    assert "random currents N(0, 1): no inputs given" in str(report)


def test_the_file_verify_takes_a_user_module_as_reference(exported):
    module, _, proto = exported["conv-front"]
    report = verify_file(proto, "ort", reference=module, progress=False)
    assert report["passed"] and report["alif_nodes"] == ["alif"]


# -- the command line ----------------------------------------------------------------------------

USER_MODULE = '''
import torch
from torch import nn
from lsnn.reference import ALIF, LI


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = ALIF(5, 6, 6, n_refractory=2, thr=0.03)
        self.readout = LI(12, 3)

    def forward(self, x):
        return self.readout(self.hidden(x))


def build(seed=0):
    torch.manual_seed(seed)
    return Net()


def retrained():
    return build(seed=1)


NOT_A_FACTORY = 3


def not_a_module():
    return "net"
'''


@pytest.fixture
def user_net(tmp_path, monkeypatch):
    """A user's module file ``usernet.py`` importable by name, its export and inputs."""
    (tmp_path / "usernet.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    import usernet

    x = np.random.default_rng(0).normal(0.5, 1.0, (T, B, 5)).astype(np.float32)
    compiler.export(usernet.build(), torch.from_numpy(x), tmp_path / "net.onnx")
    np.savez(tmp_path / "in.npz", x=x)
    return tmp_path


def test_cli_module_passes(user_net, capsys):
    assert main(["verify", str(user_net / "net.onnx"), "--module", "usernet:build",
                 "--inputs", str(user_net / "in.npz")]) == 0
    out = capsys.readouterr().out
    assert "reference: PyTorch, the Net module given" in out and "ALIF nodes: hidden;" in out
    assert out.rstrip().endswith("PASS")


def test_cli_module_with_other_weights_fails_naming_the_layer(user_net, capsys):
    assert main(["verify", str(user_net / "net.onnx"), "--module", "usernet:retrained"]) == 1
    out = capsys.readouterr().out
    assert "node 'hidden'" in out and "no inputs given" in out and out.rstrip().endswith("FAIL")


@pytest.mark.parametrize("spec, message", [
    ("nowhere:build", "--module nowhere:build: cannot import 'nowhere' (ModuleNotFoundError"),
    ("usernet:missing", "--module usernet:missing: module 'usernet' has no 'missing'"),
    ("usernet:NOT_A_FACTORY", "'NOT_A_FACTORY' is not callable (an object of type int)"),
    ("usernet:not_a_module", "not_a_module() returned an object of type str, not a torch.nn.Module"),
    ("usernet", "--module usernet: expected MODULE:FACTORY"),
])
def test_cli_broken_module_is_one_line(user_net, capsys, spec, message):
    assert main(["verify", str(user_net / "net.onnx"), "--module", spec]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_cli_inputs_of_the_wrong_shape_are_one_line(user_net, capsys):
    np.savez(user_net / "bad.npz", x=np.zeros((T, B, 4), np.float32))
    assert main(["verify", str(user_net / "net.onnx"), "--module", "usernet:build",
                 "--inputs", str(user_net / "bad.npz")]) == 2
    err = capsys.readouterr().err
    assert "input 'x' has shape [30, 2, 4], the model takes ['T', 'B', 5]" in err and err.count("\n") == 1
