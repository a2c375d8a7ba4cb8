import numpy as np

import pytest
from onnx import TensorProto, helper, numpy_helper

from lsnn.bench.energy import CELLS, E_AC_PJ, E_MAC_PJ, SynOps, constants, graph_ops, layer_ops, lsnn_ops, \
    synapse_layers


def test_synops_of_a_tiny_lsnn_counted_by_hand():
    # 3 inputs -> 2 neurons -> 1 readout, 2 steps, 1 sequence
    W = np.array([[1.0, 0.0, 2.0], [1.0, 3.0, 0.0]])  # fan-out of inputs: 2, 1, 1
    R = np.array([[0.0, 1.0], [1.0, 0.0]])  # fan-out of each neuron: 1
    W_out = np.array([[1.0, 0.0]])  # neuron 0 reaches the readout, neuron 1 does not
    X = np.array([[[1, 1, 0]], [[0, 0, 1]]], np.float32)  # step 0: inputs 0,1; step 1: input 2
    Z = np.array([[[1, 1]], [[1, 0]]], np.float32)
    ops = lsnn_ops(X, Z, W, R, W_out)
    # input: step 0: 2 + 1, step 1: 1 -> 4 ACs
    assert ops["input"] == SynOps(acs=4)
    # recurrent: step 0 sees z[-1] = 0; step 1 sees z[0] = [1, 1] -> 2 ACs
    assert ops["recurrent"] == SynOps(acs=2)
    # readout: neuron 0 spikes twice (fan-out 1), neuron 1 once (fan-out 0) -> 2 ACs
    assert ops["readout"] == SynOps(acs=2)
    total = ops["input"] + ops["recurrent"] + ops["readout"]
    assert total.energy_pj() == 8 * E_AC_PJ


def test_real_valued_inputs_cost_a_mac_per_synapse():
    W = np.array([[1.0, 0.0, 2.0], [1.0, 3.0, 0.0]])  # 4 synapses
    X = np.full((5, 2, 3), 0.5, np.float32)
    assert layer_ops(X, W) == SynOps(macs=5 * 2 * 4)
    assert layer_ops(X, W).energy_pj() == 40 * E_MAC_PJ


def test_lstm_counted_the_same_way():
    H, I, O, T = 2, 3, 1, 4
    W_ih = np.ones((4 * H, I))
    W_hh = np.ones((4 * H, H))
    W_out = np.ones((O, H))
    X = np.zeros((T, 1, I), np.float32)
    X[0, 0, 0] = 1  # one input spike: fan-out 4H = 8 ACs
    ops = CELLS["LSTM"].ops(X, W_ih, W_hh, W_out)
    assert ops["input"] == SynOps(acs=8)
    assert ops["recurrent"] == SynOps(macs=T * 4 * H * H)
    assert ops["gates"] == SynOps(macs=T * 3 * H)
    assert ops["readout"] == SynOps(macs=T * H * O)


def test_gru_counted_the_same_way_by_hand():
    """3 gates: 3H x I input synapses, 3H x H recurrent MACs; 3 products per unit and step (the reset
    gate's and the update's two)."""
    H, I, O, T = 2, 3, 1, 4
    W_ih, W_hh, W_out = np.ones((3 * H, I)), np.ones((3 * H, H)), np.ones((O, H))
    W_hh[0, 0] = 0  # a pruned recurrent synapse is not counted
    X = np.zeros((T, 1, I), np.float32)
    X[0, 0, 0] = X[2, 0, 1] = 1  # two input spikes: fan-out 3H = 6 ACs each
    ops = CELLS["GRU"].ops(X, W_ih, W_hh, W_out)
    assert ops == {"input": SynOps(acs=12), "recurrent": SynOps(macs=T * (3 * H * H - 1)),
                   "gates": SynOps(macs=T * 3 * H), "readout": SynOps(macs=T * H * O)}
    assert sum(ops.values(), SynOps()).energy_pj() == 12 * E_AC_PJ + (4 * 11 + 24 + 8) * E_MAC_PJ


def _recurrent_node_graph(op: str, H: int, I: int, gates: int, **attributes):
    directions = 2 if attributes.get("direction") == "bidirectional" else 1
    W = np.ones((directions, gates * H, I), np.float32)
    R = np.ones((directions, gates * H, H), np.float32)
    node = helper.make_node(op, ["X", "W", "R"], ["Y"], name="rec", hidden_size=H, **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(W, "W"), numpy_helper.from_array(R, "R")])
    return helper.make_model(graph)


@pytest.mark.parametrize("op, gates, products, attributes", [
    ("GRU", 3, 3, {"linear_before_reset": 1}), ("GRU", 3, 3, {"linear_before_reset": 0}),
    ("GRU", 3, 3, {"direction": "bidirectional"}), ("LSTM", 4, 3, {"direction": "reverse"}), ("RNN", 1, 0, {})])
def test_recurrent_nodes_of_a_graph_counted_by_hand(op, gates, products, attributes):
    """An ONNX recurrent node of either GRU form, any direction: input, recurrent and gate arithmetic
    of every direction, the numbers counted by hand."""
    H, I, T, B = 3, 4, 5, 2
    D = 2 if attributes.get("direction") == "bidirectional" else 1
    proto = _recurrent_node_graph(op, H, I, gates, **attributes)
    X = np.full((T, B, I), 0.25, np.float32)  # real-valued inputs: a MAC per synapse
    ops = graph_ops(synapse_layers(proto), {**constants(proto), "X": X})["rec"]
    expected = {"input": SynOps(macs=T * B * D * gates * H * I), "recurrent": SynOps(macs=T * B * D * gates * H * H)}
    if products:
        expected["gates"] = SynOps(macs=T * B * D * products * H)
    assert ops == expected


def test_model_ops_reads_the_reference_models_weights():
    import torch

    from lsnn.bench.energy import model_ops
    from lsnn.reference import build_model

    torch.manual_seed(0)
    X = (np.random.default_rng(0).random((6, 2, 4)) < 0.5).astype(np.float32)
    lsnn = build_model("lsnn", n_in=4, n_lif=2, n_alif=2, n_out=3)
    with torch.no_grad():
        Z = lsnn(torch.from_numpy(X)).Z.numpy()
    w = {k: v.detach().numpy() for k, v in (("W", lsnn.alif.W), ("R", lsnn.alif.R), ("W_out", lsnn.readout.W))}
    assert model_ops(lsnn, X, Z) == lsnn_ops(X, Z, w["W"], w["R"], w["W_out"])
    lstm = build_model("lstm", n_in=4, n_hidden=5, n_out=3)
    assert model_ops(lstm, X, None)["recurrent"] == SynOps(macs=6 * 2 * 4 * 5 * 5)
    gru = build_model("gru", n_in=4, n_hidden=5, n_out=3)
    assert model_ops(gru, X, None)["recurrent"] == SynOps(macs=6 * 2 * 3 * 5 * 5)
    assert model_ops(gru, X, None)["gates"] == SynOps(macs=6 * 2 * 3 * 5)


def _graph_figures(proto, X):
    """Per-layer figures of ``proto`` on ``X`` through :class:`lsnn.bench.layer_stats.LayerStats` and
    the reference runtime, as the bench computes them."""
    from lsnn.bench.layer_stats import LayerStats
    from lsnn.targets.torch_runtime import TorchRuntime

    stats = LayerStats(proto)
    name = proto.graph.input[0].name
    values = TorchRuntime(stats.model()).run({name: X}, stats.observed)
    stats.add({name: X, **values}, X.shape[1], X.shape[0])
    return stats


def test_graph_counts_of_suite_models_are_the_module_counts():
    """Counting from the ONNX graph gives the figures counting from the suite's modules gave."""
    import torch

    from lsnn.bench.energy import model_ops
    from lsnn.compiler.onnx.export import export
    from lsnn.reference import build_model

    torch.manual_seed(0)
    X = (np.random.default_rng(0).random((20, 3, 4)) < 0.5).astype(np.float32)
    for kind, params in (("lsnn", {"n_lif": 3, "n_alif": 4}), ("lif", {"n_lif": 5}), ("lstm", {"n_hidden": 5}),
                         ("gru", {"n_hidden": 5})):
        model = build_model(kind, n_in=4, n_out=3, **params).eval()
        with torch.no_grad():
            out = model(torch.from_numpy(X))
        by_module = model_ops(model, X, None if out.Z is None else out.Z.numpy())
        stats = _graph_figures(export(model), X)
        by_graph = [ops for kinds in stats.ops.values() for ops in kinds.values()]
        assert sum(by_graph, SynOps()) == sum(by_module.values(), SynOps()), kind
        assert sorted((o.acs, o.macs) for o in by_graph if o != SynOps(macs=0.0)) == \
            sorted((o.acs, o.macs) for o in by_module.values() if o != SynOps(macs=0.0)), kind
        if out.Z is not None:
            spikes = next(iter(stats.spike_sums.values()))
            assert np.array_equal(spikes, out.Z.numpy().sum((0, 1))), kind


def test_each_layer_of_a_user_model_by_its_name():
    """Two stacked ALIF layers, an LI readout: every layer's operations under its module path,
    counted as NeuroBench counts them from the module's own weights and spikes."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    import user_models
    from lsnn.compiler import export

    model = user_models.build("stacked")
    X = user_models.inputs(25, 3).numpy()
    with torch.no_grad():
        Z1 = model.alif1(torch.from_numpy(X))
        Z2 = model.alif2(Z1)
        Z1, Z2 = Z1.numpy(), Z2.numpy()
    stats = _graph_figures(export(model, torch.from_numpy(X)), X)
    assert list(stats.ops) == ["alif1", "alif2", "readout"]
    w = lambda t: t.detach().numpy()
    delayed = lambda Z: np.concatenate([np.zeros_like(Z[:1]), Z[:-1]])
    assert stats.ops["alif1"] == {"input": layer_ops(X, w(model.alif1.W)),
                                  "recurrent": layer_ops(delayed(Z1), w(model.alif1.R), binary=True)}
    assert stats.ops["alif1"]["input"].macs > 0 and stats.ops["alif2"]["input"].macs == 0  # currents in, spikes on
    assert stats.ops["alif2"] == {"input": layer_ops(Z1, w(model.alif2.W)),
                                  "recurrent": layer_ops(delayed(Z2), w(model.alif2.R), binary=True)}
    assert stats.ops["readout"] == {"input": layer_ops(Z2, w(model.readout.W))}
    assert np.array_equal(stats.spike_sums["alif1"], Z1.sum((0, 1)))
    assert np.array_equal(stats.spike_sums["alif2"], Z2.sum((0, 1)))
    result = stats.result(E_AC_PJ, E_MAC_PJ)
    layers = {layer["name"]: layer for layer in result["layers"]}
    assert layers["alif2"]["n_lif"] == 6 and layers["alif2"]["neurons"] == 16
    assert layers["alif2"]["spikes_per_inference"] == Z2.sum() / 3
    assert result["acs_per_inference"] == sum(layer["acs"] for layer in layers.values())
