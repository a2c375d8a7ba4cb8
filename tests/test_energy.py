import numpy as np

from lsnn.bench.energy import E_AC_PJ, E_MAC_PJ, SynOps, layer_ops, lsnn_ops, lstm_ops


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
    ops = lstm_ops(X, W_ih, W_hh, W_out)
    assert ops["input"] == SynOps(acs=8)
    assert ops["recurrent"] == SynOps(macs=T * 4 * H * H)
    assert ops["gates"] == SynOps(macs=T * 3 * H)
    assert ops["readout"] == SynOps(macs=T * H * O)


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
