"""Test models and inputs that several test files share (no test file imports another): small
reference models, a model hand-built from the spec alone, and variants of them."""
from __future__ import annotations

import numpy as np
import torch
from onnx import TensorProto, helper, numpy_helper

from lsnn.reference import build_model

SMALL = {"lsnn": {"n_lif": 6, "n_alif": 5}, "lif": {"n_lif": 6, "n_alif": 5}, "lstm": {"n_hidden": 9}}


def small(kind, seed=0):
    torch.manual_seed(seed)
    return build_model(kind, n_in=7, n_out=3, **SMALL[kind])


def spikes(T=120, B=3, I=7, p=0.2, seed=1):
    return (np.random.default_rng(seed).random((T, B, I)) < p).astype(np.float32)


def hand_built(T_sym=True, **change):
    """An LSNN written from shared/spec/ops.md alone: bare ai.lsnn nodes, no function bodies."""
    rng = np.random.default_rng(3)
    H, I, O = 6, 4, 2
    p = {"W": rng.normal(0, 1, (H, I)), "R": rng.normal(0, 0.5, (H, H)), "beta": np.r_[np.zeros(3), np.full(3, 1.8)],
         "alpha": np.full(H, 0.95), "rho": np.full(H, 0.998), "Wo": rng.normal(0, 1, (O, H)), "ao": np.full(O, 0.9),
         "bo": rng.normal(0, 0.1, O)}
    p = {k: v.astype(np.float32) for k, v in p.items()}
    p.update(change.pop("params", {}))
    alif_inputs = change.pop("alif_inputs", ["X", "W", "R", "beta", "alpha", "rho"])
    nodes = [helper.make_node(change.pop("op", "ALIF"), alif_inputs, ["Z"], name="my_alif",
                              domain=change.pop("domain", "ai.lsnn"), thr=change.pop("thr", 0.05),
                              n_refractory=change.pop("n_refractory", 2)),
             helper.make_node("LI", ["Z", "Wo", "ao", "bo"], ["Y"], name="my_readout", domain="ai.lsnn")]
    graph = helper.make_graph(
        nodes, "hand", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", I])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", "B", O])],
        [numpy_helper.from_array(v, k) for k, v in p.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18),
                                                    helper.make_opsetid("ai.lsnn", change.pop("version", 1))])
    return model, p


def non_finite_feeds(art, T=30, B=4):
    """Spikes with a NaN, +Inf and -Inf in X, and a NaN in every initial state."""
    X = spikes(T, B, art.manifest["inputs"][0]["shape"][2])
    X[3, 0, 2], X[4, 1 % B, 1], X[6, 2 % B, 0] = np.nan, np.inf, -np.inf
    feeds = {"X": X}
    for spec in art.manifest["inputs"][1:]:
        state = np.zeros([d if isinstance(d, int) else B for d in spec["shape"]], np.float32)
        state.reshape(-1)[-1] = np.nan
        feeds[spec["name"]] = state
    return feeds


def static_shape(model, T, B):
    """``model`` with fixed T and B, as ``torch.onnx.export`` writes by default."""
    for vi in list(model.graph.input) + list(model.graph.output):
        dims = vi.type.tensor_type.shape.dim
        for d, n in zip(dims, (T, B)):
            d.Clear()
            d.dim_value = n
    return model
