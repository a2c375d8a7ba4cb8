"""ONNX LSTM, GRU and RNN on the cpu against onnxruntime: random one-node models covering each
attribute and input of opset 14+ (layouts, directions, sequence_lens, initial states, peepholes,
clip, coupled gates, activations with their parameters, weights as graph inputs or constants,
optional outputs), and the refusals."""
from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from lsnn.compiler import compile
from lsnn.compiler.errors import CompileError

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
T_, B_, I_, H_ = 5, 3, 4, 6


def _model(op, *, D=1, B=B_, layout=0, lens=None, initial=False, peepholes=False, bias=True, constant=False,
           outputs=("Y", "Y_h", "Y_c"), seed=0, scale=0.5, **attrs):
    """A one-node model of ``op`` and its feeds: weights as graph inputs (initializers when
    ``constant``), ``lens`` the sequence lengths, ``outputs`` those read (others named "")."""
    rng = np.random.default_rng(seed)
    G = GATES[op] * H_
    xs = [B, T_, I_] if layout else [T_, B, I_]
    hs = [B, D, H_] if layout else [D, B, H_]
    values = {"X": rng.normal(0, 1, xs), "W": rng.normal(0, scale, (D, G, I_)),
              "R": rng.normal(0, scale, (D, G, H_))}
    if bias:
        values["B"] = rng.normal(0, scale, (D, 2 * G))
    if lens is not None:
        values["sequence_lens"] = np.array(lens, np.int32)
    if initial:
        values["initial_h"] = rng.normal(0, 1, hs)
        if op == "LSTM":
            values["initial_c"] = rng.normal(0, 1, hs)
    if peepholes:
        values["P"] = rng.normal(0, scale, (D, 3 * H_))
    values = {k: v.astype(np.float32) if v.dtype != np.int32 else v for k, v in values.items()}
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h"] + (["initial_c", "P"] if op == "LSTM" else [])
    names = [k if k in values else "" for k in order]
    while names and not names[-1]:
        names.pop()
    n_out = 3 if op == "LSTM" else 2
    outs = [n if n in outputs else "" for n in ("Y", "Y_h", "Y_c")[:n_out]]
    attrs = {"hidden_size": H_, "layout": layout, **attrs}
    if D == 2:
        attrs["direction"] = "bidirectional"
    node = helper.make_node(op, names, outs, name="rec", **attrs)
    inits = [onnx.numpy_helper.from_array(values[k], k) for k in ("W", "R", "B", "P") if constant and k in values]
    feeds = {k: v for k, v in values.items() if not (constant and k in ("W", "R", "B", "P"))}
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, TensorProto.INT32 if k == "sequence_lens" else TensorProto.FLOAT, v.shape)
         for k, v in feeds.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs if n], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), feeds


def _onnxruntime(model, feeds) -> list:
    """onnxruntime's outputs; for ``layout=1`` (which onnxruntime refuses) those of the node with
    layout 0 on the time-major inputs, made batch-major."""
    node = model.graph.node[0]
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    if layout:
        model = onnx.load_from_string(model.SerializeToString())
        next(a for a in model.graph.node[0].attribute if a.name == "layout").i = 0
        for vi in model.graph.input:
            vi.type.tensor_type.ClearField("shape")
        feeds = {k: v.swapaxes(0, 1) if k in ("X", "initial_h", "initial_c") else v for k, v in feeds.items()}
    out = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    return [o.transpose(2, 0, 1, 3) if o.ndim == 4 else o.swapaxes(0, 1) for o in out] if layout else out


def _check(model, feeds, rtol=1e-4, atol=1e-5, target="cpu", **options):
    want = _onnxruntime(model, feeds)
    got = compile(model, target=target, **options).run(feeds)
    for vi, w in zip(model.graph.output, want):
        assert got[vi.name].shape == w.shape, vi.name
        np.testing.assert_allclose(got[vi.name], w, rtol=rtol, atol=atol, err_msg=vi.name)


LSTM_CASES = {
    "plain-constant": dict(constant=True),  # the blocked forward kernel
    "plain-constant-h-only": dict(constant=True, outputs=("Y_h",)),
    "weights-as-inputs": dict(),
    "no-bias": dict(bias=False),
    "reverse": dict(direction="reverse", constant=True),
    "bidirectional-initial": dict(D=2, initial=True),
    "batch-first-bidirectional": dict(D=2, layout=1, initial=True),
    "sequence-lens-forward": dict(lens=[5, 2, 3], initial=True),
    "sequence-lens-bidirectional-batch-first": dict(D=2, layout=1, lens=[1, 5, 3], constant=True),
    "peepholes": dict(peepholes=True, initial=True),
    "clip": dict(clip=0.4, scale=1.5),
    "input-forget": dict(input_forget=1, initial=True),
    "activations": dict(D=2, activations=["HardSigmoid", "LeakyRelu", "ScaledTanh", "Sigmoid", "Softsign", "Affine"],
                        activation_alpha=[0.3, 0.2, 0.9, 0.7], activation_beta=[0.4, 1.2, 0.1]),
}


@pytest.mark.parametrize("case", LSTM_CASES)
def test_lstm_matches_onnxruntime(case):
    _check(*_model("LSTM", **LSTM_CASES[case]))


GRU_CASES = {
    "defaults": dict(),
    "linear-before-reset": dict(linear_before_reset=1, initial=True),
    "constant-bidirectional-lens": dict(D=2, constant=True, lens=[3, 5, 1], initial=True),
    "batch-first-reverse-lbr": dict(layout=1, direction="reverse", linear_before_reset=1, lens=[4, 2, 5]),
    "clip-activations": dict(clip=0.5, scale=1.5, activations=["Relu", "Elu"], activation_alpha=[0.5]),
    "h-only": dict(outputs=("Y_h",), constant=True),
}


@pytest.mark.parametrize("case", GRU_CASES)
def test_gru_matches_onnxruntime(case):
    _check(*_model("GRU", **GRU_CASES[case]))


RNN_ACTIVATIONS = ["Relu", "Tanh", "Sigmoid", "Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh",
                   "HardSigmoid", "Elu", "Softsign", "Softplus"]


@pytest.mark.parametrize("act", RNN_ACTIVATIONS)
def test_rnn_activation_matches_onnxruntime(act):
    """Each of ONNX's activations, alpha and beta given, on a bidirectional RNN (one per direction:
    the given one, then the default tanh)."""
    _check(*_model("RNN", D=2, activations=[act, "Tanh"], activation_alpha=[0.3], activation_beta=[0.2],
                   lens=[5, 3, 2], initial=True))


def test_rnn_batch_first_constant_reverse():
    _check(*_model("RNN", layout=1, direction="reverse", constant=True, initial=True))


def test_weights_given_at_run_time_are_never_skipped():
    """An infinite weight of an input that is 0: 0 * Inf is NaN (onnxruntime's dense product);
    a kernel skipping zero inputs would give a finite result."""
    model, feeds = _model("RNN", constant=False)
    feeds["X"][:, :, 0] = 0
    feeds["W"][0, :, 0] = np.inf
    got = compile(model, target="cpu").run(feeds)
    assert np.isnan(got["Y"]).all() and np.isnan(got["Y_h"]).all()


def test_wrong_number_of_activations_is_refused_naming_the_node():
    model, _ = _model("GRU", activations=["Sigmoid"])
    with pytest.raises(CompileError, match=r"^node 'rec' \(ai\.onnx::GRU\): activations has 1 function\(s\); "
                                           r"GRU with 1 direction\(s\) takes 2$"):
        compile(model, target="cpu")


def test_unknown_activation_is_refused_naming_the_node():
    model, _ = _model("RNN", activations=["Swish"])
    with pytest.raises(CompileError, match=r"^node 'rec' \(ai\.onnx::RNN\): activation 'swish' is not one of"):
        compile(model, target="cpu")


# -- Cortex-M: one step per call (the forward direction only) --------------------------------

@pytest.mark.usefixtures("arm_toolchain")
@pytest.mark.parametrize("case", {
    "lstm-peepholes-clip-coupled": ("LSTM", dict(peepholes=True, clip=0.8, input_forget=1, initial=True)),
    "lstm-activations": ("LSTM", dict(activations=["HardSigmoid", "Elu", "Softplus"], activation_alpha=[0.3, 0.7],
                                      activation_beta=[0.4])),
    "gru": ("GRU", dict(initial=True)),
    "gru-linear-before-reset": ("GRU", dict(linear_before_reset=1)),
    "rnn": ("RNN", dict(initial=True)),
}.items(), ids=lambda c: c[0])
def test_forward_recurrent_node_on_cortex_m4_matches_onnxruntime(case):
    """The general kernel in its C form, one step per call: one sequence (the step graph's Y of
    [T, 1, B, H] as a graph output takes B = 1)."""
    op, kw = case[1]
    model, feeds = _model(op, B=1, constant=True, **kw)
    want = _onnxruntime(model, feeds)
    got = compile(model, target="cortex-m4").run(feeds)
    for vi, w in zip(model.graph.output, want):
        np.testing.assert_allclose(got[vi.name], w, rtol=1e-4, atol=1e-5, err_msg=vi.name)


WHOLE_SEQUENCE = {"bidirectional": (dict(D=2), "direction=bidirectional"),
                  "reverse": (dict(direction="reverse"), "direction=reverse"),
                  "batch-first": (dict(layout=1), "layout=1 (batch first)"),
                  "sequence-lens": (dict(lens=[5]), "a sequence_lens input")}


@pytest.mark.parametrize("case", WHOLE_SEQUENCE)
def test_step_graph_refuses_what_needs_the_whole_sequence_naming_the_node(case):
    """Before any C is generated: the node by name and what it asks that one step per call cannot
    do (Cortex-M then runs the model whole)."""
    from lsnn.compiler.stepgraph import NotStepwise, step_graph

    kw, problem = WHOLE_SEQUENCE[case]
    model, _ = _model("GRU", B=1, constant=True, **kw)
    with pytest.raises(NotStepwise, match=re.escape(f"node 'rec' (ai.onnx::GRU): {problem} is not supported: a "
                                                    "step-by-step run")):
        step_graph(model)


# -- Cortex-M: the whole sequence in one call, where one step per call cannot run it -----------

@pytest.mark.usefixtures("arm_toolchain")
@pytest.mark.parametrize("case", {
    "gru-bidirectional-lens-weights-as-inputs": ("GRU", dict(D=2, lens=[3, 5, 1], initial=True)),
    "lstm-batch-first-reverse-peepholes": ("LSTM", dict(layout=1, direction="reverse", peepholes=True,
                                                        constant=True, initial=True)),
    "rnn-reverse-lens": ("RNN", dict(direction="reverse", lens=[4, 2, 5], constant=True)),
}.items(), ids=lambda c: c[0])
def test_whole_sequence_node_on_cortex_m4_matches_onnxruntime(case):
    """Directions that walk time backwards, sequence_lens (int32, sent bit for bit), batch-first
    and weights given at run time: the firmware runs the whole graph once (B = 3 sequences)."""
    op, kw = case[1]
    model, feeds = _model(op, **kw)
    want = _onnxruntime(model, feeds)
    art = compile(model, target="cortex-m4")
    assert art.manifest["layout"]["runs"] == "whole" and art.manifest["layout"]["state_size"] == 0
    got = art.run(feeds)
    for vi, w in zip(model.graph.output, want):
        assert got[vi.name].shape == w.shape, vi.name
        np.testing.assert_allclose(got[vi.name], w, rtol=1e-4, atol=1e-5, err_msg=vi.name)
    assert art.last_run.steps == 1 and art.last_run.instructions > 0


@pytest.mark.usefixtures("arm_toolchain")
def test_one_step_per_call_stays_the_mode_where_it_works():
    """A forward node with constant weights runs one step per call (its instructions per step
    profiled); the same node reversed runs whole (no state, no profile)."""
    step = compile(_model("GRU", B=1, constant=True)[0], target="cortex-m4").manifest
    whole = compile(_model("GRU", B=1, constant=True, direction="reverse")[0], target="cortex-m4").manifest
    assert step["layout"]["runs"] == "step" and step["layout"]["state_size"] == H_
    assert step["footprint"]["instructions_per_step"]["value"] > 0
    assert whole["layout"]["runs"] == "whole" and whole["footprint"]["instructions_per_step"] is None


@pytest.mark.usefixtures("arm_toolchain")
def test_whole_sequence_too_big_for_ram_is_refused_naming_the_node_and_the_sizes():
    """4.4 MB of input for the cortex-m4's 4 MiB of RAM: refused before GCC runs."""
    model, _ = _model("RNN", direction="reverse", constant=True, B=8)
    x = model.graph.input[0].type.tensor_type.shape.dim
    x[0].dim_value, x[2].dim_value = 200, 700
    w = next(t for t in model.graph.initializer if t.name == "W")
    w.CopyFrom(onnx.numpy_helper.from_array(np.zeros((1, H_, 700), np.float32), "W"))
    with pytest.raises(CompileError, match=re.escape(
            "node 'rec' (ai.onnx::RNN): direction=reverse is not supported: a step-by-step run (Cortex-M's firmware: "
            "one time step per call) never holds the whole sequence; run whole (all its sequences in one call) "
            "it needs ")
            + r"\d+ bytes of RAM \(inputs 4480000 bytes, outputs \d+ bytes, intermediates \d+ bytes, kernel workspace "
              r"\d+ bytes, harness and stack 49152 bytes\) and cortex-m4 \(QEMU board mps2-an386\) has 4194304 bytes"):
        compile(model, target="cortex-m4")


@pytest.mark.usefixtures("arm_toolchain")
def test_whole_sequence_project_saves_loads_and_runs(tmp_path):
    from lsnn.targets import load

    model, feeds = _model("GRU", direction="reverse", constant=True)
    art = compile(model, target="cortex-m4")
    again = load(art.save(tmp_path / "proj")).run(feeds)
    for name, value in art.run(feeds).items():
        np.testing.assert_array_equal(again[name], value)


@pytest.mark.parametrize("kind", ["lstm-bidirectional", "gru"])
def test_torch_exported_layer_matches_pytorch_on_cpu(kind):
    """``torch.onnx.export`` of ``nn.LSTM(bidirectional=True)`` and ``nn.GRU`` (weights and zero
    initial states as initializers; GRU with linear_before_reset=1)."""
    import torch
    from recurrent_timing import exported

    model, net, x = exported(kind, T=7, B=3, I=5, H=8)
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(compile(model, target="cpu").run({"x": x})["y"], want, rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("arm_toolchain")
def test_torch_exported_bidirectional_lstm_matches_pytorch_on_cortex_m4():
    """``nn.LSTM(bidirectional=True)`` through ``torch.onnx.export``: the backward half needs the
    whole sequence, so the firmware runs the graph whole (three sequences at once)."""
    import torch
    from recurrent_timing import exported

    model, net, x = exported("lstm-bidirectional", T=7, B=3, I=5, H=8)
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0].numpy()
    art = compile(model, target="cortex-m4")
    assert art.manifest["layout"]["runs"] == "whole"
    np.testing.assert_allclose(art.run({"x": x})["y"], want, rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("arm_toolchain")
def test_torch_exported_gru_matches_pytorch_on_cortex_m4():
    """``nn.GRU`` through ``torch.onnx.export``, one step per call on the M4 (one sequence)."""
    import torch
    from recurrent_timing import exported

    model, net, x = exported("gru", T=7, B=1, I=5, H=8)
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(compile(model, target="cortex-m4").run({"x": x})["y"], want, rtol=1e-4, atol=1e-5)
