"""The TVM compiler for CPUs, checked against the reference runtime (differential testing)."""
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from lsnn import compiler
from lsnn.compiler.cli import main
from lsnn.compiler.importer import CompileError
from lsnn.compiler.onnx.export import export
from lsnn.reference import build_model
from lsnn.targets import load, open_runtime
from lsnn.targets.artifact import ArtifactError
from lsnn.targets.base import TargetError, get_target
from model_variants import hand_built, non_finite_feeds, small, spikes, static_shape


@pytest.fixture(scope="module")
def compiled():
    out = {}
    for kind in ("lsnn", "lstm"):
        for streaming in (False, True):
            model = export(small(kind), streaming=streaming)
            out[kind, streaming] = (model, compiler.compile(model, "cpu"))
    return out


@pytest.mark.parametrize("kind", ["lsnn", "lstm"])
@pytest.mark.parametrize("T, B", [(90, 3), (17, 1), (1, 5)])
def test_compiled_matches_reference_for_any_T_and_B(compiled, kind, T, B):
    model, art = compiled[kind, False]
    for X in (spikes(T=T, B=B, seed=T), np.random.default_rng(T).normal(0, 1, (T, B, 7)).astype(np.float32)):
        ref = open_runtime(model, "torch").run({"X": X})
        got = art.run({"X": X})
        if kind == "lsnn":
            # short sequences of a small net: no spike flips expected; parity is checked in full by verify
            assert np.array_equal(got["Z"], ref["Z"])
        np.testing.assert_allclose(got["Y"], ref["Y"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["lsnn", "lstm"])
def test_compiled_streaming_two_calls_equal_one(compiled, kind):
    _, art = compiled[kind, True]
    X = spikes(T=60)
    states = [i for i in art.inputs if i != "X"]
    spec = {i["name"]: i["shape"] for i in art.manifest["inputs"]}
    zeros = {n: np.zeros([d if isinstance(d, int) else 3 for d in spec[n]], np.float32) for n in states}
    whole = art.run({"X": X, **zeros})
    first = art.run({"X": X[:25], **zeros})
    second = art.run({"X": X[25:], **{i: first[i.replace("initial_", "final_")] for i in states}})
    np.testing.assert_array_equal(np.concatenate([first["Y"], second["Y"]]), whole["Y"])


@pytest.mark.parametrize("hidden", [32, 40])  # 4H a multiple of the register block, and not
def test_lstm_blocked_recurrent_product_matches_reference(hidden):
    torch.manual_seed(1)
    net = build_model("lstm", n_in=7, n_out=3, n_hidden=hidden)
    model = export(net)
    X = np.random.default_rng(2).normal(0, 1, (50, 2, 7)).astype(np.float32)
    ref = open_runtime(model, "torch").run({"X": X})
    np.testing.assert_allclose(compiler.compile(model, "cpu").run({"X": X})["Y"], ref["Y"], rtol=1e-4, atol=2e-5)


def test_dense_and_event_driven_alif_kernels_agree():
    model = export(small("lsnn"))
    X = spikes(T=200, p=0.3)
    ref = open_runtime(model, "torch").run({"X": X})
    for events in (True, False):
        got = compiler.compile(model, "cpu", events=events).run({"X": X})
        assert np.array_equal(got["Z"], ref["Z"])
        np.testing.assert_allclose(got["Y"], ref["Y"], rtol=1e-4, atol=1e-5)


def test_hand_built_bare_model_compiles_and_matches_reference():
    model, _ = hand_built()
    assert not model.functions
    art = compiler.compile(model, "cpu")
    X = spikes(T=300, I=4, p=0.3)
    ref = open_runtime(model, "torch").run({"X": X})
    np.testing.assert_allclose(art.run({"X": X})["Y"], ref["Y"], rtol=1e-4, atol=1e-5)


def test_compile_cli_save_load_run(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(export(small("lsnn")), str(path))
    out = tmp_path / "art"
    assert main(["compile", str(path), "--target", "cpu", "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["target"]["name"] == "cpu" and manifest["tvm_version"]
    assert manifest["inputs"] == [{"name": "X", "shape": ["T", "B", 7], "dtype": "float32"}]
    assert [o["name"] for o in manifest["outputs"]] == ["Y", "Z"] and len(manifest["source_sha256"]) == 64
    X = spikes(T=40)
    np.savez(tmp_path / "in.npz", X=X)
    assert main(["run", str(out), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "o.npz")]) == 0
    ref = open_runtime(path, "torch").run({"X": X})
    np.testing.assert_allclose(np.load(tmp_path / "o.npz")["Y"], ref["Y"], rtol=1e-4, atol=1e-5)
    art = load(out)
    np.testing.assert_array_equal(art.run({"X": X})["Z"], ref["Z"])
    with pytest.raises(ArtifactError, match="input 'X' has shape"):
        art.run({"X": spikes(T=4, I=6)})


def test_verify_target_cpu_passes(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(export(small("lif")), str(path))
    assert main(["verify", str(path), "--target", "cpu"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_corrupt_artifacts_are_named(tmp_path):
    art = compiler.compile(export(small("lstm")), "cpu")
    d = art.save(tmp_path / "a")
    lib = d / "model.so"
    lib.write_bytes(lib.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ArtifactError, match="corrupt library"):
        load(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        load(d)
    (d / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        load(d)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "nothing")


def test_bad_models_and_targets_leave_no_artifact(tmp_path, capsys):
    out = tmp_path / "art"
    bad = {}
    m, _ = hand_built(params={"R": np.zeros((5, 5), np.float32)})
    bad["shape"] = (m, "input 'R' ('R') has shape [5, 5]")
    g = helper.make_graph([helper.make_node("Loop", ["n", "c"], ["y"], body=helper.make_graph([], "b", [], []))],
                          "g", [helper.make_tensor_value_info("n", TensorProto.INT64, []),
                                helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    bad["op"] = (helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), "Loop")
    for name, (model, message) in bad.items():
        p = tmp_path / f"{name}.onnx"
        onnx.save(model, str(p))
        assert main(["compile", str(p), "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err, err
        assert not out.exists() and not list(tmp_path.glob(".art*"))
    good = tmp_path / "good.onnx"
    onnx.save(export(small("lsnn")), str(good))
    assert main(["compile", str(good), "--target", "tpu", "-o", str(out)]) == 2
    assert "unknown target 'tpu'" in capsys.readouterr().err
    assert main(["compile", str(good), "--option", "speed=11", "-o", str(out)]) == 2
    assert "no option(s) ['speed']" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(TargetError):
        compiler.compile(good, "gpu9")
    with pytest.raises(CompileError):
        compiler.compile(bad["op"][0], "cpu")


@pytest.mark.parametrize("kind", ["lsnn", "lstm"])
def test_non_finite_inputs_give_the_reference_result(compiled, kind):
    model, art = compiled[kind, True]
    feeds = non_finite_feeds(art)
    ref = open_runtime(model, "torch").run(feeds)
    got = art.run(feeds)
    if kind == "lsnn":  # a NaN membrane never spikes: H(NaN) = 0
        assert np.array_equal(got["Z"], ref["Z"]) and 0 < ref["Z"].sum()
    for name in ref:
        assert np.array_equal(np.isnan(got[name]), np.isnan(ref[name])), name
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=name)


def test_non_finite_weights_are_rejected_on_every_target():
    model, _ = hand_built(params={"W": np.array([[np.inf, 1, 2, 3]] * 6, np.float32)})
    for target in ("cpu", "cuda", "cortex-m4"):
        with pytest.raises(CompileError, match=r"initializer 'W' has 6 non-finite value\(s\) \(NaN or Inf\) among 24"):
            compiler.compile(model, target)
    model, _ = hand_built()
    model.graph.node.insert(0, helper.make_node("Constant", [], ["ao"], name="decay",
                                                value=numpy_helper.from_array(np.array([0.9, np.nan], np.float32))))
    model.graph.initializer.remove(next(i for i in model.graph.initializer if i.name == "ao"))
    with pytest.raises(CompileError, match=r"Constant node 'decay' \(output 'ao'\) has 1 non-finite value"):
        compiler.compile(model, "cpu")


@pytest.mark.parametrize("domain", ["ai.lsnnx", "com.example"])
def test_a_node_of_another_domain_is_not_compiled(domain):
    model, _ = hand_built(domain=domain)
    model.opset_import.append(helper.make_opsetid(domain, 1))
    for target in ("cpu", "cortex-m4"):
        with pytest.raises(CompileError, match=f"node 'my_alif' \\({domain}::ALIF\\): op ALIF of domain '{domain}' "
                                               f"is not supported"):
            compiler.compile(model, target)


def test_kernel_attributes_are_declared_and_checked():
    cpu = get_target("cpu")
    with pytest.raises(TargetError, match=r"LI kernel of target 'cpu': unknown attribute\(s\) \['dimz'\]; "
                                          r"missing attribute\(s\) \['dims'\]"):
        cpu.kernel("LI", dimz={"I": 4, "O": 2}, finite_weights=True)
    with pytest.raises(TargetError, match=r"missing attribute\(s\) \['finite_weights'\]"):
        cpu.kernel("ALIF", thr=0.1, n_refractory=1, dims={})
    dense = cpu.kernel("LI", dims={"I": None, "O": None}, finite_weights=False).script()
    assert "nonzero" not in dense and "2147483647" in cpu.kernel("LI", dims={}, finite_weights=True).script()


def test_static_shape_model_compiles_and_runs():
    model = static_shape(export(small("lsnn")), 40, 2)
    art = compiler.compile(model, "cpu")
    assert art.manifest["inputs"] == [{"name": "X", "shape": [40, 2, 7], "dtype": "float32"}]
    X = spikes(T=40, B=2)
    ref = open_runtime(model, "torch").run({"X": X})
    got = art.run({"X": X})
    assert np.array_equal(got["Z"], ref["Z"]) and ref["Z"].sum() > 0
    np.testing.assert_allclose(got["Y"], ref["Y"], rtol=1e-4, atol=1e-5)


def test_relu_keeps_nan_as_onnx_and_the_reference_do():
    """A Relu front end before an LI: TVM lowers Relu to max(x, 0), which made NaN a 0."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 1, (2, 3)).astype(np.float32), "W"),
             numpy_helper.from_array(np.full(2, 0.9, np.float32), "alpha")]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["X"], ["h"]), helper.make_node("LI", ["h", "W", "alpha"], ["Y"], domain="ai.lsnn")],
        "relu_li", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", "B", 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ai.lsnn", 1)])
    X = rng.normal(0, 1, (4, 2, 3)).astype(np.float32)
    X[1, 0, 2] = np.nan
    ref = open_runtime(model, "torch").run({"X": X})["Y"]
    got = compiler.compile(model, "cpu").run({"X": X})["Y"]
    assert np.isnan(ref[1:, 0]).all() and not np.isnan(ref[:, 1]).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-5, atol=1e-6)
