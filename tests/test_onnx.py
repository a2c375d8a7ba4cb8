"""Export to ONNX, stock onnxruntime, the reference runtime and the parity verifier."""
import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from lsnn.compiler.cli import main
from lsnn.targets.verify import BatchResult, Probe, compare, verify
from lsnn.compiler.onnx.export import export, metadata
from lsnn.reference import alif, li
from lsnn.targets import open_runtime
from model_variants import hand_built, small, spikes

@pytest.mark.parametrize("kind", ["lsnn", "lif", "lstm"])
def test_export_structure(kind):
    m = export(small(kind), metadata={"lsnn.config": {"x": 1}})
    onnx.checker.check_model(m, full_check=True)
    ops = [(n.domain, n.op_type) for n in m.graph.node]
    if kind == "lstm":
        assert ("", "LSTM") in ops and not any(op in ("Scan", "Loop") for _, op in ops)
        assert not m.functions
    else:
        assert ("ai.lsnn", "ALIF") in ops and ("ai.lsnn", "LI") in ops
        assert {(f.domain, f.name) for f in m.functions} == {("ai.lsnn", "ALIF"), ("ai.lsnn", "LI")}
        assert any(o.domain == "ai.lsnn" and o.version == 1 for o in m.opset_import)
        alif_node = next(n for n in m.graph.node if n.op_type == "ALIF")
        attrs = {a.name: helper.get_attribute_value(a) for a in alif_node.attribute}
        assert attrs == {"thr": pytest.approx(0.01), "n_refractory": 5}
    x = m.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in x[:2]] == ["T", "B"] and x[2].dim_value == 7
    meta = metadata(m)
    assert meta["lsnn.kind"] == kind and meta["lsnn.config"] == {"x": 1}


@pytest.mark.parametrize("kind", ["lsnn", "lif", "lstm"])
def test_ort_and_reference_runtime_match_pytorch(kind):
    net = small(kind)
    X = spikes()
    with torch.no_grad():
        ref = net(torch.from_numpy(X))
    m = export(net)
    for rt in ("ort", "torch"):
        out = open_runtime(m, rt).run({"X": X})
        np.testing.assert_allclose(out["Y"], ref.Y.numpy(), rtol=1e-5, atol=1e-6)
        if kind != "lstm":
            assert np.array_equal(out["Z"], ref.Z.numpy()) and ref.Z.sum() > 0


@pytest.mark.parametrize("kind", ["lsnn", "lstm"])
def test_streaming_two_calls_equal_one(kind):
    net = small(kind)
    m = export(net, streaming=True)
    rt = open_runtime(m, "ort")
    X = spikes(T=80)
    state_in = [n for n in rt.inputs if n != "X"]
    zeros = {n: np.zeros([d if isinstance(d, int) else 3 for d in s.shape], np.float32)
             for n, s in zip(rt.inputs, rt.session.get_inputs()) if n != "X"}
    whole = rt.run({"X": X, **zeros})
    first = rt.run({"X": X[:33], **zeros})
    carried = {i: first[i.replace("initial_", "final_")] for i in state_in}
    second = rt.run({"X": X[33:], **carried})
    np.testing.assert_allclose(np.concatenate([first["Y"], second["Y"]]), whole["Y"], rtol=1e-6, atol=1e-7)
    for i in state_in:
        o = i.replace("initial_", "final_")
        np.testing.assert_allclose(second[o], whole[o], rtol=1e-6, atol=1e-7)
    # and the non-streaming file gives the same readout
    np.testing.assert_allclose(open_runtime(export(net), "ort").run({"X": X})["Y"], whole["Y"], rtol=1e-6, atol=1e-7)


def test_hand_built_bare_model_runs_in_ort_via_cli(tmp_path):
    model, p = hand_built()
    assert not model.functions
    path = tmp_path / "hand.onnx"
    onnx.save(model, str(path))
    X = spikes(T=200, I=4, p=0.3)
    np.savez(tmp_path / "in.npz", X=X)
    assert main(["run", str(path), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "out.npz")]) == 0
    Y = np.load(tmp_path / "out.npz")["Y"]
    Z = alif(X, p["W"], p["R"], p["beta"], p["alpha"], p["rho"], 0.05, 2).Z
    assert Z.sum() > 0
    np.testing.assert_allclose(Y, li(Z, p["Wo"], p["ao"], p["bo"]).Y.numpy(), rtol=1e-5, atol=1e-6)
    report = verify(path, "ort", progress=False)
    assert report["passed"] and report["task"] is None


@pytest.mark.parametrize("change, message", [
    ({"op": "GRU"}, "node 'my_alif' (ai.lsnn::GRU): unknown op ai.lsnn::GRU"),
    ({"version": 2}, "ai.lsnn opset version 2 is not supported"),
    ({"version": 0}, "ai.lsnn opset version 0 is not supported (this suite implements version 1 only)"),
    ({"thr": float("nan")}, "node 'my_alif' (ai.lsnn::ALIF): attribute 'thr' must be finite, got nan"),
    ({"thr": float("-inf")}, "node 'my_alif' (ai.lsnn::ALIF): attribute 'thr' must be finite, got -inf"),
    ({"params": {"R": np.zeros((5, 5), np.float32)}}, "node 'my_alif' (ai.lsnn::ALIF): input 'R' ('R') has shape [5, 5]"),
    ({"alif_inputs": ["X", "W", "", "beta", "alpha", "rho"]}, "node 'my_alif' (ai.lsnn::ALIF): required input 'R' is missing"),
    ({"alif_inputs": ["X", "W", "R", "beta"]}, "required input 'alpha' is missing"),
    ({"params": {"beta": np.zeros(6, np.float64)}}, "input 'beta' ('beta') is float64, the op takes float32"),
    ({"n_refractory": -1}, "attribute 'n_refractory' must be >= 0"),
])
def test_bad_models_are_rejected_by_name_and_leave_no_output(tmp_path, capsys, change, message):
    model, _ = hand_built(**change)
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    np.savez(tmp_path / "in.npz", X=spikes(T=10, I=4))
    for runtime in ("ort", "torch"):
        rc = main(["run", str(path), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "out.npz"),
                   "--runtime", runtime])
        assert rc == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("domain", ["ai.lsnnx", ""])
def test_a_node_of_another_domain_is_not_ours(tmp_path, capsys, domain):
    model, _ = hand_built(domain=domain)
    if domain:
        model.opset_import.append(helper.make_opsetid(domain, 1))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    np.savez(tmp_path / "in.npz", X=spikes(T=10, I=4))
    for runtime in ("ort", "torch"):
        assert main(["run", str(path), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "o.npz"),
                     "--runtime", runtime]) == 2
        err = capsys.readouterr().err
        assert "ALIF" in err and (f"domain '{domain}'" in err or f"{domain}:ALIF" in err), err


def test_bad_feeds_and_files(tmp_path, capsys):
    model, _ = hand_built()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    cases = [({"X": spikes(T=10, I=5)}, "input 'X' has shape [10, 3, 5], the model takes ['T', 'B', 4]"),
             ({"X": spikes(T=10, I=4).astype(np.float64)}, "input 'X' is float64, the model takes float32"),
             ({"Q": spikes(T=10, I=4)}, "unknown input(s) ['Q']"),
             ({"X": spikes(T=0, I=4)}, "input 'X' has T = 0 time steps (shape [0, 3, 4]); a run needs at least one"),
             ({"X": spikes(T=10, B=0, I=4)}, "input 'X' has B = 0 sequences (shape [10, 0, 4])")]
    for feeds, message in cases:
        np.savez(tmp_path / "in.npz", **feeds)
        assert main(["run", str(path), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "o.npz")]) == 2
        assert message in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(path.read_bytes()[:100])
    assert main(["run", str(corrupt), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "o.npz")]) == 2
    assert "corrupt.onnx: not a valid ONNX file" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing"), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "x.onnx").exists()


def test_compare_tells_rounding_flips_from_real_divergence():
    T, B, H = 5, 1, 2
    A = np.full((T, B, H), 0.01, np.float32)
    V = np.zeros((T, B, H), np.float32)
    V[2, 0, 0] = 0.0100001  # a hair above threshold: margin 1e-5
    Z = (V > A).astype(np.float32)
    ref = {"Z": Z, "V": V, "A": A, "Y": np.ones((T, B, 1), np.float32)}
    probe = [Probe("n", "Z", "V", "A")]
    flipped = dict(ref, Z=np.zeros_like(Z), V=V.copy())
    flipped["V"][2, 0, 0] = 0.01
    r = compare(ref, flipped, probe, ["Y"])
    assert not r.failures and r.first_divergence == [2] and r.worst_margin < 1e-3
    far_V = V.copy()
    far_V[2, 0, 0] = 0.5
    ref_far = dict(ref, V=far_V, Z=(far_V > A).astype(np.float32))
    r = compare(ref_far, dict(ref_far, Z=np.zeros_like(Z)), probe, ["Y"])
    assert any("not a rounding flip" in f for f in r.failures)
    drift = dict(ref, V=V + 1e-3)
    r = compare(ref, drift, probe, ["Y"])
    assert any("V differ before" in f for f in r.failures)
    bad_y = dict(ref, Y=ref["Y"] * 1.01)
    assert any("outputs differ" in f for f in compare(ref, bad_y, probe, ["Y"]).failures)
    assert isinstance(r, BatchResult)


def test_verify_cli_passes_and_fails(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(export(small("lsnn")), str(path))
    assert main(["verify", str(path), "--runtime", "ort", "--json"]) == 0
    assert '"passed": true' in capsys.readouterr().out
    # a model whose function body computes something else must fail parity
    broken = export(small("lsnn"))
    for f in broken.functions:
        if f.name == "ALIF":
            for n in f.node:
                if n.op_type == "Sub" and list(n.input) == ["one", "alpha"]:
                    n.op_type = "Add"  # (1 + alpha) instead of (1 - alpha)
    onnx.save(broken, str(path))
    assert main(["verify", str(path), "--runtime", "ort"]) == 1
    assert "FAIL" in capsys.readouterr().out
