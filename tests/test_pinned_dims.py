"""A batch size that the model fixes through a constant initial state (an initializer
``initial_y`` of shape ``[1, O]`` makes the ``B`` of the ``X`` it runs on 1): every runtime
refuses another B with the project's error, naming the input, and the compiled targets write
the fixed size into their manifest's input shapes."""

import numpy as np
import pytest
from lsnn import compiler
from lsnn.compiler.onnx.validate import ModelError, validate
from lsnn.targets import open_runtime
from lsnn.targets.artifact import ArtifactError
from onnx import TensorProto, helper, numpy_helper


def readout_model(state_B: int, alif: bool = False, alif_state_B: int | None = None):
    """X [T, B, 1] into an LI (preceded by an ALIF of one neuron when ``alif``) whose ``initial_y``
    is an initializer of ``state_B`` rows; ``alif_state_B`` gives the ALIF an ``initial_v`` too."""
    p = {"Wo": [[0.5]], "alpha_o": [0.9], "initial_y": np.full((state_B, 1), 0.25)}
    nodes, x = [], "X"
    if alif:
        p.update(W=[[1.0]], R=[[0.0]], beta=[1.0], alpha=[0.9], rho=[0.99])
        ins = ["X", "W", "R", "beta", "alpha", "rho"]
        if alif_state_B is not None:
            p["initial_v"] = np.zeros((alif_state_B, 1))
            ins.append("initial_v")
        nodes.append(helper.make_node("ALIF", ins, ["Z"], name="alif", domain="ai.lsnn", thr=0.05))
        x = "Z"
    nodes.append(helper.make_node("LI", [x, "Wo", "alpha_o", "", "initial_y"], ["Y"], name="readout",
                                  domain="ai.lsnn"))
    graph = helper.make_graph(
        nodes, "pinned", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", "B", 1])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in p.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.lsnn", 1)])


def spikes(T: int, B: int) -> dict:
    return {"X": (np.random.default_rng(0).random((T, B, 1)) < 0.5).astype(np.float32)}


def test_validate_returns_the_dimensions_that_constants_pin():
    assert validate(readout_model(1)) == {"B": 1}
    assert validate(readout_model(2, alif=True)) == {"B": 2}  # through the ALIF's Z into the LI
    assert validate(readout_model(2, alif=True, alif_state_B=2)) == {"B": 2}


@pytest.mark.parametrize("runtime", ["ort", "torch"])
def test_the_batch_of_an_initial_state_is_carried_through_the_alif(runtime):
    """ORT used to broadcast (Y [3, 2, 1] for B = 1), the reference failed in functional."""
    rt = open_runtime(readout_model(2, alif=True), runtime)
    with pytest.raises(ModelError) as e:
        rt.run(spikes(3, 1))
    assert str(e.value) == ("node 'readout' (ai.lsnn::LI): input 'initial_y' ('initial_y') has shape [2, 1], "
                            "but B = 1 from the other inputs (expected [1, 1])")
    assert rt.run(spikes(3, 2))["Y"].shape == (3, 2, 1)


def test_states_of_two_batch_sizes_are_refused_at_compile_time():
    with pytest.raises(ModelError, match=r"^node 'readout' \(ai\.lsnn::LI\): input 'initial_y' \('initial_y'\) "
                                         r"has shape \[2, 1\], but B = 1 from the other inputs"):
        compiler.compile(readout_model(2, alif=True, alif_state_B=1), "cpu")


@pytest.mark.parametrize("state_B, alif, fed_B", [(1, False, 2), (2, True, 1)])
def test_cpu_refuses_another_batch_by_name(state_B, alif, fed_B):
    """TVM used to raise a raw ValueError (Mismatched Y0.shape[0] on argument #4)."""
    model = readout_model(state_B, alif)
    art = compiler.compile(model, "cpu")
    assert art.manifest["inputs"] == [{"name": "X", "shape": ["T", state_B, 1], "dtype": "float32"}]
    with pytest.raises(ArtifactError) as e:
        art.run(spikes(3, fed_B))
    assert str(e.value) == (f"input 'X' has shape [3, {fed_B}, 1], the model takes ['T', {state_B}, 1] "
                            f"(axis 1 must be {state_B})")
    good = spikes(3, state_B)
    np.testing.assert_allclose(art.run(good)["Y"], open_runtime(model, "torch").run(good)["Y"], rtol=1e-5)


def test_cortex_m_refuses_another_batch_by_name(arm_toolchain):
    """Cortex-M used to run B = 2 sequences from a state given for one."""
    art = compiler.compile(readout_model(1), "cortex-m4")
    assert art.manifest["inputs"] == [{"name": "X", "shape": ["T", 1, 1], "dtype": "float32"}]
    with pytest.raises(ArtifactError, match=r"^input 'X' has shape \[2, 2, 1\], the model takes \['T', 1, 1\] "
                                            r"\(axis 1 must be 1\)$"):
        art.run(spikes(2, 2))


def test_one_dimension_name_pinned_to_two_sizes_is_refused():
    """Two inputs share the name B; one LI's state makes it 1, the other's 2."""
    p = {"Wo": [[0.5]], "alpha_o": [0.9], "y1": [[0.0]], "y2": [[0.0], [0.0]]}
    nodes = [helper.make_node("LI", [x, "Wo", "alpha_o", "", y], [out], name=f"readout{k}", domain="ai.lsnn")
             for k, (x, y, out) in enumerate([("X1", "y1", "Y1"), ("X2", "y2", "Y2")], 1)]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["T", "B", 1]) for x in ("X1", "X2")],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["T", "B", 1]) for y in ("Y1", "Y2")],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in p.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.lsnn", 1)])
    with pytest.raises(ModelError) as e:
        validate(model)
    assert str(e.value) == ("node 'readout2' (ai.lsnn::LI): its inputs make B = 2, but the graph's dimension 'B' "
                            "is fixed to 1 by node 'readout1' (ai.lsnn::LI)")
