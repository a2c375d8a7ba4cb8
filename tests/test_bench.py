import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lsnn.compiler.cli import main
from lsnn.bench.harness import thread_counts, FULL, QUICK, RssSampler, load_config
from lsnn.reference.paths import MODELS_DIR
from lsnn.reference.train import train
from lsnn.targets.cortex_m import missing_tools


def test_bench_matrix_and_report(tmp_path, capsys, tiny_store_recall):
    """An LSNN and both recurrent baselines (LSTM, GRU) through the whole matrix and the report."""
    for kind, params in (("lsnn", {"n_lif": 3, "n_alif": 3}), ("lstm", {"n_hidden": 4}), ("gru", {"n_hidden": 4})):
        train("store-recall", kind, tmp_path / kind, steps=1, batch_size=4, progress=False,
              model_params=params, task_params=tiny_store_recall)
    cfg = {"models": [str(tmp_path / "lsnn"), str(tmp_path / "lstm"), str(tmp_path / "gru"), str(tmp_path / "missing")],
           "batch_sizes": [1, 2], "heldout_limit": 4, "repeats": 2, "warmup": 1,
           "cortex_m_cores": ["cortex-m4"], "cortex_m_heldout": 2}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "report"
    assert main(["bench", "--config", str(tmp_path / "cfg.json"), "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    counts = thread_counts(FULL["threads"])  # one thread and all cores
    assert counts == list(dict.fromkeys([1, os.cpu_count()]))
    assert results["schema"] == "lsnn-bench/1" and results["environment"]["threads"] == counts
    assert results["config"] == {**FULL, **cfg, "threads": counts}  # the file overrides the full configuration
    assert results["environment"]["gpu"] is False  # cuda_device() on this machine (no CUDA device, below)
    runs = {(r["model"], r["runtime"], r["batch"], r["threads"]) for r in results["runs"]}
    assert runs == {(m, r, b, n) for m in ("lsnn", "lstm", "gru") for b in (1, 2)
                    for r, ns in (("torch", [1]), ("ort", counts), ("cpu", counts)) for n in ns}
    for r in results["runs"]:
        lat = r["latency_per_sequence_s"]
        assert 0 < lat["p10"] <= lat["median"] <= lat["p90"] and r["artifact_bytes"] > 0
        assert r["options"].get("threads") == (r["threads"] if r["runtime"] == "cpu" else None)  # options recorded
    unavailable = {u.get("runtime") or u.get("model"): u["reason"] for u in results["unavailable"]}
    assert "no CUDA device" in unavailable["cuda"] and "no checkpoint" in unavailable[str(tmp_path / "missing")]
    by = {m["name"]: m for m in results["models"]}
    if missing_tools() and os.environ.get("CI") != "true":
        assert "qemu-system-arm" in unavailable["cortex-m"] or "arm-none-eabi" in unavailable["cortex-m"]
    else:
        assert "cortex-m" not in unavailable
        mcu = {r["model"]: r for r in results["microcontrollers"]}
        assert set(mcu) == {"lsnn", "lstm", "gru"} and all(r["core"] == "cortex-m4" for r in mcu.values())
        for r in mcu.values():
            assert r["instructions_per_step"] > 0 and r["flash_bytes"] > 0 and r["sequences"] == 2
        assert mcu["lsnn"]["dense_outputs_equal"] and mcu["lsnn"]["instructions_per_step_dense"] > 0
        assert "## Microcontrollers (QEMU)" in (out / "report.md").read_text()
        assert 0 <= by["lsnn"]["accuracy"].pop("cortex-m4") <= 1
        assert by["gru"]["accuracy"].pop("cortex-m4") == by["gru"]["accuracy"]["torch"]
    assert set(by["lsnn"]["accuracy"]) == {"torch", "ort", "cpu"}
    assert len(set(by["lsnn"]["accuracy"].values())) == 1  # parity: same decisions everywhere
    assert set(by["lsnn"]["peak_working_memory_bytes"]) == {"torch", "ort", "cpu"}
    for v in by["lsnn"]["peak_working_memory_bytes"].values():  # measured on the first held-out batch
        assert v["batch"] == 2 and isinstance(v["bytes"], int) and 0 <= v["bytes"] < 2**30
    assert by["lsnn"]["macs_per_inference"] == 0 and by["lsnn"]["firing_rate_hz"]["all"] >= 0
    assert by["lstm"]["macs_per_inference"] > 0 and "firing_rate_hz" not in by["lstm"]
    T, H, O = by["gru"]["steps"], 4, 2
    for kind, gates in (("lstm", 4), ("gru", 3)):  # recurrent synapses, 3 products per unit, readout: all MACs
        e = by[kind]
        assert e["macs_per_inference"] == T * (gates * H * H + 3 * H + H * O), kind
        assert abs(e["energy_uj_per_inference"] - (e["acs_per_inference"] * 0.9 + e["macs_per_inference"] * 4.6)
                   * 1e-6) < 1e-12
    assert len(set(by["gru"]["accuracy"].values())) == 1
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "Horowitz" in html
    md = (out / "report.md").read_text()
    assert "## LSNN against LSTM and GRU" in md and "no CUDA device" in md
    assert "| figure | LSNN lsnn | LSTM lstm | LSNN / LSTM | GRU gru | LSNN / GRU |" in md


def test_bench_config_errors(tmp_path, capsys):
    (tmp_path / "c.json").write_text('{"batch": 3}')
    assert main(["bench", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "o")]) == 2
    assert "unknown key(s) ['batch']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    (tmp_path / "t.json").write_text('{"threads": [1, -2]}')
    assert main(["bench", "--config", str(tmp_path / "t.json"), "--out", str(tmp_path / "o")]) == 2
    assert "threads: expected a list of thread counts (0: all cores), got [1, -2]" in capsys.readouterr().err


def test_quick_and_full_configurations(tmp_path):
    (tmp_path / "empty.json").write_text("{}")
    quick, full = load_config(None, True), load_config(str(tmp_path / "empty.json"), False)
    assert full == {**FULL, "threads": thread_counts(FULL["threads"])} and load_config(None, False) == quick  # no --config: the quick configuration
    assert quick["models"] == full["models"] and len(quick["models"]) >= 7
    for m in quick["models"]:  # every committed checkpoint, found wherever lsnn bench runs from
        assert Path(m).is_absolute() and Path(m).parent == MODELS_DIR and (Path(m) / "checkpoint.pt").is_file()
    assert quick["repeats"] < full["repeats"] and quick["heldout_limit"] < full["heldout_limit"]
    assert max(quick["batch_sizes"]) < max(full["batch_sizes"]) and quick["runtimes"] == QUICK["runtimes"]


def test_rss_sampler_sees_an_allocation():
    with RssSampler() as s:
        block = np.ones(64 * 2**20, np.uint8)  # 64 MiB, touched
        block[::4096] = 2
        del block
    assert s.growth >= 60 * 2**20
    with RssSampler() as s:
        pass
    assert s.growth < 16 * 2**20


# -- a user's models (lsnn bench --model) --------------------------------------------------------

QUICK_TIMING = {"repeats": 2, "warmup": 1}


@pytest.fixture(scope="module")
def user_onnx(tmp_path_factory):
    """Issue 13's (a) stacked and (b) linear-front networks exported, and an .npz of 4 sequences of
    30 steps with labels."""
    import user_models

    from lsnn.compiler import export

    d = tmp_path_factory.mktemp("user")
    for name in ("stacked", "linear-front"):
        export(user_models.build(name), user_models.inputs(30, 2), d / f"{name}.onnx")
    np.savez(d / "data.npz", x=user_models.inputs(30, 4).numpy(), labels=np.array([0, 1, 2, 0]))
    (d / "timing.json").write_text(json.dumps(QUICK_TIMING))
    return d


def test_bench_of_user_models_per_layer(user_onnx, tmp_path, capsys):
    d, out = user_onnx, tmp_path / "report"
    assert main(["bench", "--model", str(d / "stacked.onnx"), "--model", str(d / "linear-front.onnx"),
                 "--inputs", str(d / "data.npz"), "--targets", "cpu", "--batch-sizes", "1",
                 "--config", str(d / "timing.json"), "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["runtimes"] == ["ort", "cpu"] and results["config"]["batch_sizes"] == [1]
    runs = {(r["model"], r["runtime"], r["batch"]) for r in results["runs"]}
    assert runs == {(m, r, 1) for m in ("stacked.onnx", "linear-front.onnx") for r in ("ort", "cpu")}
    for r in results["runs"]:
        assert r["steps"] == 30 and 0 < r["latency_per_sequence_s"]["median"] and r["artifact_bytes"] > 0
    by = {m["name"]: m for m in results["models"]}
    layers = {name: {layer["name"]: layer for layer in m["layers"]} for name, m in by.items()}
    assert list(layers["stacked.onnx"]) == ["alif1", "alif2", "readout"]  # every layer, by its module path
    assert "alif" in layers["linear-front.onnx"] and len(layers["linear-front.onnx"]) == 3  # + two MatMuls
    for name, want in (("alif1", (24, 16)), ("alif2", (16, 6))):
        layer = layers["stacked.onnx"][name]
        assert (layer["neurons"], layer["n_lif"]) == want and layer["spikes_per_inference"] > 0
        assert layer["synapses"]["recurrent"]["acs"] > 0 and layer["energy_uj"] > 0
        assert layer["firing_rate_hz"]["all"] > 0
    assert layers["stacked.onnx"]["alif1"]["synapses"]["input"]["macs"] > 0  # real-valued currents: MACs
    assert layers["stacked.onnx"]["alif2"]["synapses"]["input"]["macs"] == 0  # spikes: ACs only
    for m in by.values():
        assert m["acs_per_inference"] == pytest.approx(sum(layer["acs"] for layer in m["layers"]))
        assert m["metric"] == "accuracy" and set(m["accuracy"]) == {"ort", "cpu"}
        assert len(set(m["accuracy"].values())) == 1 and m["task"] == "data.npz"  # same decisions
        assert set(m["peak_working_memory_bytes"]) == {"ort", "cpu"} and m["compile_seconds"]["cpu"] > 0
    md = (out / "report.md").read_text()
    assert "## Spikes and energy per layer" in md and "| stacked.onnx | alif2 | 16 (6) |" in md
    assert "## Models" in md and "sequences of data.npz" in md and "LSNN against LSTM" not in md


def test_bench_of_a_user_model_on_a_task(tmp_path):
    """A task's held-out set as the data: accuracy when its classes are the model's outputs."""
    import user_models

    from lsnn.compiler import export
    from lsnn.reference.tasks import make_task

    task = make_task("store-recall")
    torch.manual_seed(0)
    export(user_models.StackedALIF(n_in=task.n_in, n_out=task.n_out).eval(), user_models.inputs(30, 2)
           .repeat(1, 1, 4)[..., :task.n_in], tmp_path / "m.onnx")
    (tmp_path / "cfg.json").write_text(json.dumps({**QUICK_TIMING, "heldout_limit": 2}))
    assert main(["bench", "--model", str(tmp_path / "m.onnx"), "--task", "store-recall", "--targets", "ort",
                 "--batch-sizes", "1", "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "o")]) == 0
    m = json.loads((tmp_path / "o" / "results.json").read_text())["models"][0]
    assert m["task"] == "store-recall" and m["metric"] == "accuracy" and set(m["accuracy"]) == {"ort"}
    assert m["steps"] == 1400 and {layer["name"] for layer in m["layers"]} == {"alif1", "alif2", "readout"}


def _bench_error(capsys, args, out) -> str:
    assert main(["bench", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lsnn bench: error: ") and err.count("\n") == 1 and not out.exists()
    return err


def test_bench_of_user_models_refuses_bad_input(user_onnx, tmp_path, capsys):
    d, out = user_onnx, tmp_path / "o"
    model, data = str(d / "stacked.onnx"), str(d / "data.npz")
    err = _bench_error(capsys, ["--model", str(tmp_path / "none.onnx"), "--inputs", data], out)
    assert f"model file not found: {tmp_path / 'none.onnx'}" in err
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    assert "bad.onnx: not a valid ONNX file" in _bench_error(capsys, ["--model", str(tmp_path / "bad.onnx"),
                                                                      "--inputs", data], out)
    assert "one of --task NAME or --inputs FILE.npz, not both" in _bench_error(
        capsys, ["--model", model, "--inputs", data, "--task", "store-recall"], out)
    assert "one of --task NAME or --inputs FILE.npz" in _bench_error(capsys, ["--model", model], out)
    assert "unknown target 'cortex-m9'; choose from ort, torch, cortex-m4" in _bench_error(
        capsys, ["--model", model, "--inputs", data, "--targets", "cpu,cortex-m9"], out)
    assert "go with --model" in _bench_error(capsys, ["--inputs", data], out)
    assert "input 'x' takes 12 features per step; task 'store-recall' gives 40" in _bench_error(
        capsys, ["--model", model, "--task", "store-recall"], out)
    bad = {"narrow.npz": {"x": np.zeros((30, 4, 5), np.float32)},
           "names.npz": {"a": np.zeros((30, 4, 12)), "b": np.zeros((4, 3))},
           "labels.npz": {"x": np.zeros((30, 4, 12)), "labels": np.array([0, 1, 2])},
           "classes.npz": {"x": np.zeros((30, 4, 12)), "labels": np.array([0, 1, 2, 3])}}
    messages = {"narrow.npz": "input 'x' has shape [30, 4, 5], the model takes ['T', 'B', 12]",
                "names.npz": "holds ['a', 'b'], the model takes x (no array 'x')",
                "labels.npz": "'labels' has shape [3], expected [4] (one class per sequence)",
                "classes.npz": "'labels' holds 0..3, the model has 3 output(s): classes 0..2"}
    for name, arrays in bad.items():
        np.savez(tmp_path / name, **arrays)
        err = _bench_error(capsys, ["--model", model, "--inputs", str(tmp_path / name)], out)
        assert f"{tmp_path / name} for {model}: {messages[name]}" in err, err
