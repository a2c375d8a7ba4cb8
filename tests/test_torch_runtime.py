"""The reference runtime (ONNX's evaluator with the ai.lsnn ops of lsnn.reference)."""
import numpy as np
from onnx import TensorProto, helper

from lsnn.targets import open_runtime
from model_variants import hand_built, spikes


def test_outputs_left_out_with_an_empty_name_do_not_feed_later_optional_inputs():
    """ALIF outputs [Z, "", "", "", final_a] and an LI whose initial_y is left out with "": the
    evaluator once stored final_v under "" and fed it to the LI as its initial state."""
    model, _ = hand_built()
    alif_node, li_node = model.graph.node
    del alif_node.output[:]
    alif_node.output.extend(["Z", "", "", "", "final_a"])
    li_node.input.append("")
    model.graph.output.append(helper.make_tensor_value_info("final_a", TensorProto.FLOAT, ["B", 6]))
    X = spikes(T=40, B=2, I=4, p=0.3)
    ref = open_runtime(model, "torch").run({"X": X})
    ort = open_runtime(model, "ort").run({"X": X})
    np.testing.assert_allclose(ref["Y"], ort["Y"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ref["final_a"], ort["final_a"], rtol=1e-5, atol=1e-6)
