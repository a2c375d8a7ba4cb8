"""ONNX's own node test cases, compiled for the cpu (and the recurrent ones for the cortex-m4):
each as ``onnx_node_cases.json`` says.

The harness is :mod:`onnx_node_cases` (run it as a script to see or rewrite the differences).
Nothing may give a wrong result; a refusal names the node and has a reason in the file.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnx_node_cases as harness

EXPECTED = harness.load_expected()


@pytest.fixture(scope="module")
def outcomes() -> dict:
    """Every case's outcome, compiled and run once for all the tests of this file (~90 s)."""
    return harness.run_all()


@pytest.fixture(scope="module")
def cortex_m4_outcomes(arm_toolchain) -> dict:
    """The recurrent cases on the cortex-m4 under QEMU (each runs whole, one call: ~30 s)."""
    return harness.run_all("cortex-m4")


def test_every_case_has_its_expected_outcome(outcomes):
    assert harness.differences(EXPECTED, outcomes) == []


def test_the_expected_list_names_each_case_once_with_a_reason():
    assert set(EXPECTED["targets"]) == set(harness.TARGETS)
    for target in harness.TARGETS:
        assert set(harness.entries(EXPECTED, target)) == set(harness.cases(target)), target
    entries = [e for es in EXPECTED["targets"].values() for e in es.values() if not isinstance(e, str)]
    assert all(e["outcome"] in ("refused", "crashed") and e["reason"] in EXPECTED["reasons"] for e in entries)
    assert {e["reason"] for e in entries} == set(EXPECTED["reasons"])


def test_no_case_gives_a_wrong_result(outcomes):
    assert {n: o.detail for n, o in outcomes.items() if o.kind == "wrong"} == {}


def test_no_case_crashes(outcomes):
    assert {n: o.detail for n, o in outcomes.items() if o.kind == "crashed"} == {}


def test_every_op_family_is_covered():
    assert {family for family, _ in harness.cases().values()} == set(harness.FAMILIES)


def test_every_recurrent_case_passes(outcomes):
    """All 6 LSTM, 6 GRU and 6 RNN cases: weights as graph inputs, layout=1, reverse and
    bidirectional, sequence_lens, peepholes, initial bias, optional outputs."""
    recurrent = {n: o.kind for n, o in outcomes.items() if harness.cases()[n][0] in harness.RECURRENT}
    assert recurrent == {n: "pass" for n in recurrent} and len(recurrent) == 18


def test_every_recurrent_case_passes_on_cortex_m4(cortex_m4_outcomes):
    """The same 18 cases on the cortex-m4 under QEMU: none runs one step per call (weights are
    graph inputs in all of them, and some walk time backwards or take sequence_lens), so each
    runs whole (:mod:`lsnn.compiler.wholegraph`)."""
    assert {n: f"{o.kind} {o.detail}".strip() for n, o in cortex_m4_outcomes.items()} == \
        {n: "pass" for n in harness.cases("cortex-m4")}
    assert len(cortex_m4_outcomes) == 18


def test_every_cortex_m4_case_has_its_expected_outcome(cortex_m4_outcomes):
    assert harness.differences(EXPECTED, cortex_m4_outcomes, "cortex-m4") == []


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _tensor(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def test_a_tvm_converter_failure_names_the_unnamed_node_by_index():
    """The second node's shape is a graph input: refused as node #1, with the input named."""
    from lsnn.compiler import compile
    from lsnn.compiler.importer import CompileError

    model = _model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Reshape", ["y", "s"], ["z"])],
                   [_tensor("x", [2, 3]), _tensor("s", [1], TensorProto.INT64)], [_tensor("z", [6])])
    with pytest.raises(CompileError, match=r"^node #1 \(ai\.onnx::Reshape\): input 'shape' is computed at run "
                                           r"time; the compiler takes it only as a constant"):
        compile(model, target="cpu")


def test_layer_normalization_statistics_keep_the_data_rank():
    """With the scale an initializer (as exported networks have it): Mean and InvStdDev are
    [B, 1], not scalars, and match numpy."""
    from lsnn.compiler import compile

    scale = onnx.numpy_helper.from_array(np.full(4, 2.0, np.float32), "scale")
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean", "inv"], name="ln", epsilon=1e-5)
    model = _model([node], [_tensor("x", [3, 4])],
                   [_tensor("y", [3, 4]), _tensor("mean", [3, 1]), _tensor("inv", [3, 1])], [scale])
    x = np.arange(12, dtype=np.float32).reshape(3, 4) ** 1.5
    out = compile(model, target="cpu").run({"x": x})
    mean = x.mean(1, keepdims=True)
    inv = 1 / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out["mean"], mean, rtol=1e-5)
    np.testing.assert_allclose(out["inv"], inv, rtol=1e-4)
    np.testing.assert_allclose(out["y"], 2 * (x - mean) * inv, rtol=1e-4, atol=1e-5)
