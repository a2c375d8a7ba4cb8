"""An LSTM's readout computed in its kernel on the cpu (``LSTM+Readout``): the ONNX chain
``LSTM -> Squeeze(axis 1) -> MatMul(constant W) [-> Add(constant bias)]`` is recognised strictly
(compiler/importer.py: lstm_readouts), the fused kernel matches onnxruntime and the unfused
path bit for bit, ``Y`` is still produced where something else reads it, and every graph that
is not the pattern keeps the separate kernels."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from lsnn.compiler import compile
from lsnn.compiler.importer import lstm_readouts, to_relax
from lsnn.targets.base import Target, get_target

I_, H_ = 5, 12


def _model(*, T=9, B=3, O=10, bias_shape=(10,), bias_first=False, add=True, outputs=("out",), weight_input=False,
           axis=1, lstm_attrs=None, mm_reader=False, initial=False, opset=18, seed=0):
    """X -> LSTM -> Squeeze(axis) -> MatMul(W) -> Add(bias) -> out, with ``outputs`` the graph
    outputs (any of out, H_all, H_seq, mm, side)."""
    rng = np.random.default_rng(seed)
    G = 4 * H_
    inits = {"W": rng.normal(0, 0.5, (1, G, I_)), "R": rng.normal(0, 0.5, (1, G, H_)), "Bl": rng.normal(0, 0.5, (1, 2 * G)),
             "Wo": rng.normal(0, 0.5, (H_, O)), "bo": rng.normal(0, 0.5, bias_shape), "axes": np.array([axis], np.int64)}
    feeds = {"X": rng.normal(0, 1, (T, B, I_)).astype(np.float32)}
    if initial:
        feeds["h0"], feeds["c0"] = (rng.normal(0, 1, (1, B, H_)).astype(np.float32) for _ in range(2))
    if weight_input:
        feeds["Wo"] = inits.pop("Wo").astype(np.float32)
    lstm_in = ["X", "W", "R", "Bl"] + (["", "h0", "c0"] if initial else [])
    nodes = [helper.make_node("LSTM", lstm_in, ["H_all"], hidden_size=H_, **(lstm_attrs or {})),
             helper.make_node("Squeeze", ["H_all", "axes"] if opset >= 13 else ["H_all"], ["H_seq"],
                              **({} if opset >= 13 else {"axes": [axis]})),
             helper.make_node("MatMul", ["H_seq", "Wo"], ["mm" if add else "out"])]
    if add:
        nodes.append(helper.make_node("Add", ["bo", "mm"] if bias_first else ["mm", "bo"], ["out"]))
    if mm_reader:
        nodes.append(helper.make_node("Relu", ["mm"], ["side"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(v.astype(np.float32) if v.dtype != np.int64 else v, k) for k, v in inits.items()
         if k != "axes" or opset >= 13])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), feeds


def _fused(model) -> bool:
    names = {gv.name_hint for gv in to_relax(model, get_target("cpu")).functions}
    return "lstm_readout" in names


def _check(model, feeds, **options):
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = compile(model, "cpu", **options).run(feeds)
    for vi, w in zip(model.graph.output, want):
        assert got[vi.name].shape == w.shape, vi.name
        np.testing.assert_allclose(got[vi.name], w, rtol=1e-4, atol=2e-5, err_msg=vi.name)
    return got


FUSED = {
    "bias": dict(),
    "bias-first-operand": dict(bias_first=True, bias_shape=(1, 1, 10)),
    "bias-2d": dict(bias_shape=(1, 10)),
    "scalar-bias": dict(bias_shape=(1,)),
    "no-add": dict(add=False),
    "opset-11-axes-attribute": dict(opset=11),
    "negative-axis": dict(axis=-3),
    "batch-1-long": dict(T=70, B=1, O=3, bias_shape=(3,)),  # two chunks, rows that no tile of 4 divides
    "partial-group-wide": dict(T=11, B=9, O=37, bias_shape=(37,), initial=True),  # groups of 8 and 1, O of 2 tiles + tail
}


@pytest.mark.parametrize("case", FUSED)
def test_fused_readout_matches_onnxruntime(case):
    model, feeds = _model(**FUSED[case])
    assert _fused(model)
    _check(model, feeds)


@pytest.mark.parametrize("outputs", [("out", "H_all"), ("H_seq", "out")])
def test_y_is_still_produced_when_something_else_reads_it(outputs):
    model, feeds = _model(outputs=outputs, B=5)
    assert _fused(model)
    got = _check(model, feeds)
    assert np.isfinite(got[outputs[0]]).all()


def test_a_product_read_elsewhere_ends_the_chain_at_the_matmul():
    """The MatMul's output is read by the Add and a Relu: the kernel gives the product, and the
    Add and the Relu take it."""
    model, feeds = _model(outputs=("out", "side"), mm_reader=True)
    assert lstm_readouts(model.graph) == {0: (2, ["Wo", ""], False)}
    assert _fused(model)
    _check(model, feeds)


NOT_THE_PATTERN = {
    "weight-is-an-input": dict(weight_input=True),
    "squeeze-of-another-axis": dict(T=1, axis=0, bias_shape=(10,)),
}


@pytest.mark.parametrize("case", NOT_THE_PATTERN)
def test_other_graphs_keep_the_separate_kernels(case):
    model, feeds = _model(**NOT_THE_PATTERN[case])
    assert lstm_readouts(model.graph) == {}
    assert not _fused(model)
    _check(model, feeds)


DECLINED = {
    "bias-along-time": dict(bias_shape=(9, 1, 10)),   # broadcasts along more than the last axis
    "not-a-plain-cell": dict(lstm_attrs={"clip": 3.0}),  # the general recurrent kernel
}


@pytest.mark.parametrize("case", DECLINED)
def test_chains_the_kernel_cannot_take_are_converted_as_they_are(case):
    model, feeds = _model(**DECLINED[case])
    assert 0 in lstm_readouts(model.graph)
    assert not _fused(model)
    _check(model, feeds)


def test_fused_equals_the_separate_kernels_bit_for_bit_on_one_and_two_threads(monkeypatch):
    model, feeds = _model(T=40, B=11, O=10)
    fused = [compile(model, "cpu", threads=t).run(feeds)["out"] for t in (1, 2)]
    monkeypatch.setattr(Target, "fuses_lstm_readout", lambda self: False)
    assert not _fused(model)
    separate = compile(model, "cpu", threads=1).run(feeds)["out"]
    assert np.array_equal(fused[0], separate) and np.array_equal(fused[1], separate)


def test_other_targets_keep_the_chain():
    for name in ("cuda", "cortex-m4"):
        assert not get_target(name).fuses_lstm_readout()
    assert get_target("cpu").fuses_lstm_readout()


def test_one_direction_is_stacked_without_a_copy():
    """Y [T, 1, B, H] and the final states of a one-direction node are reshapes of the kernel's
    outputs (views in the VM), not concatenations (at batch 64 of sMNIST a 27 MB copy on one thread)."""
    model, _ = _model(weight_input=True, outputs=("out", "H_all"))
    text = to_relax(model, get_target("cpu")).script()
    assert "R.concat" not in text and "R.reshape" in text
