"""The public layers (lsnn.reference.ALIF, LI) and lsnn.compiler.export of modules built from them:
the layers are the functional reference, their custom ops export as ai.lsnn nodes, and what the
exporter writes runs in onnxruntime exactly as the module."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

import lsnn.compiler
from lsnn.compiler.exporter import ExportError
from lsnn.compiler.onnx.export import metadata
from lsnn.reference import ALIF, LI, LSNN, alif, li
from lsnn.reference.errors import ConfigError, OutputError
from lsnn.reference.surrogate import spike

from user_models import ARCHITECTURES, N_IN, build, inputs


def _layer(seed=0, **kw):
    torch.manual_seed(seed)
    return ALIF(5, 3, 4, n_refractory=2, thr=0.05, **kw)


def test_alif_layer_is_the_functional_reference():
    layer, X = _layer(), torch.randn(30, 2, 5)
    with torch.no_grad():  # the custom op
        Z, V, A, final = layer.sequence(X)
    ref = alif(X, layer.W.detach(), layer.R.detach(), layer.beta, layer.alpha, layer.rho, 0.05, 2)
    for got, want in zip((Z, V, A, *final), (ref.Z, ref.V, ref.A, *ref.final_state)):
        assert torch.equal(got, want)
    assert 0 < Z.mean() < 1 and torch.equal(layer(X), Z)
    assert layer.beta[:3].abs().sum() == 0 and torch.allclose(layer.beta[3:], torch.tensor(1.8))
    assert torch.diagonal(layer.R).abs().sum() == 0


def test_state_continues_a_sequence():
    layer, X = _layer(), torch.randn(40, 2, 5)
    with torch.no_grad():
        whole = layer(X)
        first, state = layer(X[:15], return_state=True)
        second = layer(X[15:], state)
    assert torch.equal(torch.cat([first, second]), whole)
    readout = LI(7, 2, tau=5.0)
    with torch.no_grad():
        Y = readout(whole)
        y1, y = readout(whole[:15], return_state=True)
        assert torch.equal(torch.cat([y1, readout(whole[15:], y)]), Y)
    assert torch.equal(Y, li(whole, readout.W.detach(), readout.alpha, readout.bias.detach()).Y)


def test_op_gradients_equal_the_reference_with_the_pseudo_derivative():
    """The custom op's backward (for code that calls torch.ops.lsnn.alif directly) and the layer's
    training path both give BPTT through the pseudo-derivative."""
    layer, X = _layer(), torch.randn(25, 2, 5)
    W, R = layer.W, layer.R_raw
    out = torch.ops.lsnn.alif(X, W, R * layer.no_self, layer.beta, layer.alpha, layer.rho, thr=0.05, n_refractory=2)
    gW, gR = torch.autograd.grad(out[0].sum() + out[1].pow(2).sum(), (W, R))
    ref = alif(X, W, R * layer.no_self, layer.beta, layer.alpha, layer.rho, 0.05, 2, spike_fn=spike)
    rW, rR = torch.autograd.grad(ref.Z.sum() + ref.V.pow(2).sum(), (W, R), retain_graph=True)
    assert gW.abs().sum() > 0 and torch.allclose(gW, rW) and torch.allclose(gR, rR)
    lW, = torch.autograd.grad(layer(X).sum(), (W,))  # training path
    zW, = torch.autograd.grad(ref.Z.sum(), (W,))
    assert torch.allclose(lW, zW)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_lif": 0, "n_alif": 0}, "at least one neuron"),
    ({"n_refractory": -1}, "n_refractory must be a non-negative integer"),
    ({"tau_m": 0.0}, "tau_m must be a positive number"),
    ({"thr": float("nan")}, "thr must be a finite number"),
])
def test_bad_layer_configurations_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ALIF(**{"n_in": 3, "n_lif": 2, "n_alif": 2, **kwargs})


def test_suite_lsnn_is_a_composition_and_loads_flat_checkpoints():
    torch.manual_seed(0)
    model = LSNN(n_in=4, n_lif=3, n_alif=2, n_out=2).eval()
    assert isinstance(model.alif, ALIF) and isinstance(model.readout, LI)
    flat = {"W": model.alif.W, "R_raw": model.alif.R_raw, "no_self": model.alif.no_self, "beta": model.alif.beta,
            "alpha": model.alif.alpha, "rho": model.alif.rho, "W_out": model.readout.W,
            "b_out": model.readout.bias, "alpha_out": model.readout.alpha}
    other = LSNN(n_in=4, n_lif=3, n_alif=2, n_out=2).eval()
    other.load_state_dict({k: v.detach().clone() for k, v in flat.items()})
    X = torch.randn(20, 1, 4)
    with torch.no_grad():
        assert torch.equal(other(X).Y, model(X).Y)


def _ort(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_user_architectures_export_and_run_in_onnxruntime_as_the_module(name):
    module = build(name)
    dynamic = lsnn.compiler.export(module, inputs(T=10, B=2))
    static = lsnn.compiler.export(module, inputs(T=30, B=2), dynamic=False)
    dims = [d.dim_param or d.dim_value for d in dynamic.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["T", "B", N_IN] and dynamic.graph.output[0].name == "Y"
    assert [d.dim_value for d in static.graph.input[0].type.tensor_type.shape.dim] == [30, 2, N_IN]
    layers = {n: m for n, m in module.named_modules() if isinstance(m, (ALIF, LI))}
    nodes = {n.name: n.op_type for n in dynamic.graph.node if n.domain == "ai.lsnn"}
    assert nodes == {n: type(m).__name__ for n, m in layers.items()}  # one node per layer, named by its path
    assert {f.name for f in dynamic.functions} == set(nodes.values())  # with function bodies
    meta = metadata(dynamic)["lsnn.layers"]
    assert [(e["name"], e["op"]) for e in meta] == list(nodes.items())
    for T, B in ((30, 2), (7, 1), (45, 3)):
        x = inputs(T=T, B=B, seed=T)
        with torch.no_grad():
            want = module(x).numpy()
        close(_ort(dynamic, x.numpy()), want)
    x = inputs(T=30, B=2, seed=5)
    with torch.no_grad():
        close(_ort(static, x.numpy()), module(x).numpy())


def close(got, want):
    """Equal up to float32 rounding (onnxruntime's convolution sums in another order than torch's);
    one spike more or less would move the readout by orders of magnitude more."""
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_masked_recurrent_weights_are_folded_into_initializers():
    proto = lsnn.compiler.export(build("stacked"), inputs(T=4, B=2))
    constants = {t.name: t for t in proto.graph.initializer}
    for node in (n for n in proto.graph.node if n.op_type == "ALIF"):
        R = onnx.numpy_helper.to_array(constants[node.input[2]])
        assert np.diagonal(R).sum() == 0 and np.abs(R).sum() > 0


def test_export_writes_the_file_atomically(tmp_path):
    path = tmp_path / "net.onnx"
    proto = lsnn.compiler.export(build("linear-front"), inputs(T=4, B=2), path)
    assert onnx.load(str(path)) == proto and [p.name for p in tmp_path.iterdir()] == ["net.onnx"]


class _TimeBranch(nn.Module):
    def __init__(self):
        super().__init__()
        self.alif = ALIF(3, 2, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: not exportable
            return self.alif(x)
        return x


@pytest.mark.parametrize("module, example, message", [
    (lambda: "not a module", torch.zeros(3, 2, 3), "takes a torch.nn.Module, got str"),
    (lambda: _TimeBranch(), torch.zeros(3, 2, 3, dtype=torch.float64), "example input 0 must be float32"),
    (lambda: _TimeBranch(), torch.zeros(3), r"example input 0 has shape \[3\]"),
    (lambda: _TimeBranch(), torch.ones(3, 2, 3), "torch.onnx.export could not export _TimeBranch"),
])
def test_bad_exports_are_named_and_write_nothing(tmp_path, module, example, message):
    with pytest.raises(ExportError, match=message):
        lsnn.compiler.export(module(), example, tmp_path / "out.onnx")
    assert list(tmp_path.iterdir()) == []


def test_export_to_a_folder_is_refused_before_exporting(tmp_path):
    with pytest.raises(OutputError, match="is a folder"):
        lsnn.compiler.export(build("stacked"), inputs(T=4, B=2), tmp_path)
