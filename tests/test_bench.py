import json
import os
from pathlib import Path

import numpy as np

from lsnn.compiler.cli import main
from lsnn.bench.harness import FULL, QUICK, RssSampler, load_config
from lsnn.reference.paths import MODELS_DIR
from lsnn.reference.train import train
from lsnn.targets.cortex_m import missing_tools


def test_bench_matrix_and_report(tmp_path, capsys, tiny_store_recall):
    for kind, params in (("lsnn", {"n_lif": 3, "n_alif": 3}), ("lstm", {"n_hidden": 4})):
        train("store-recall", kind, tmp_path / kind, steps=1, batch_size=4, progress=False,
              model_params=params, task_params=tiny_store_recall)
    cfg = {"models": [str(tmp_path / "lsnn"), str(tmp_path / "lstm"), str(tmp_path / "missing")],
           "batch_sizes": [1, 2], "heldout_limit": 4, "repeats": 2, "warmup": 1,
           "cortex_m_cores": ["cortex-m4"], "cortex_m_heldout": 2}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    out = tmp_path / "report"
    assert main(["bench", "--config", str(tmp_path / "cfg.json"), "--out", str(out)]) == 0
    assert "report.html" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["schema"] == "lsnn-bench/1" and results["environment"]["threads"] == 1
    assert results["config"] == {**FULL, **cfg}  # the file overrides the full configuration, key by key
    assert results["environment"]["gpu"] is False  # cuda_device() on this machine (no CUDA device, below)
    runs = {(r["model"], r["runtime"], r["batch"]) for r in results["runs"]}
    assert runs == {(m, r, b) for m in ("lsnn", "lstm") for r in ("torch", "ort", "cpu") for b in (1, 2)}
    for r in results["runs"]:
        lat = r["latency_per_sequence_s"]
        assert 0 < lat["p10"] <= lat["median"] <= lat["p90"] and r["artifact_bytes"] > 0
    unavailable = {u.get("runtime") or u.get("model"): u["reason"] for u in results["unavailable"]}
    assert "no CUDA device" in unavailable["cuda"] and "no checkpoint" in unavailable[str(tmp_path / "missing")]
    by = {m["name"]: m for m in results["models"]}
    if missing_tools() and os.environ.get("CI") != "true":
        assert "qemu-system-arm" in unavailable["cortex-m"] or "arm-none-eabi" in unavailable["cortex-m"]
    else:
        assert "cortex-m" not in unavailable
        mcu = {r["model"]: r for r in results["microcontrollers"]}
        assert set(mcu) == {"lsnn", "lstm"} and all(r["core"] == "cortex-m4" for r in mcu.values())
        for r in mcu.values():
            assert r["instructions_per_step"] > 0 and r["flash_bytes"] > 0 and r["sequences"] == 2
        assert mcu["lsnn"]["dense_outputs_equal"] and mcu["lsnn"]["instructions_per_step_dense"] > 0
        assert "## Microcontrollers (QEMU)" in (out / "report.md").read_text()
        assert 0 <= by["lsnn"]["accuracy"].pop("cortex-m4") <= 1
    assert set(by["lsnn"]["accuracy"]) == {"torch", "ort", "cpu"}
    assert len(set(by["lsnn"]["accuracy"].values())) == 1  # parity: same decisions everywhere
    assert set(by["lsnn"]["peak_working_memory_bytes"]) == {"torch", "ort", "cpu"}
    for v in by["lsnn"]["peak_working_memory_bytes"].values():  # measured on the first held-out batch
        assert v["batch"] == 2 and isinstance(v["bytes"], int) and 0 <= v["bytes"] < 2**30
    assert by["lsnn"]["macs_per_inference"] == 0 and by["lsnn"]["firing_rate_hz"]["all"] >= 0
    assert by["lstm"]["macs_per_inference"] > 0 and "firing_rate_hz" not in by["lstm"]
    e = by["lstm"]
    assert abs(e["energy_uj_per_inference"] - (e["acs_per_inference"] * 0.9 + e["macs_per_inference"] * 4.6) * 1e-6) < 1e-12
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3 and "Horowitz" in html
    md = (out / "report.md").read_text()
    assert "## LSNN against LSTM" in md and "no CUDA device" in md


def test_bench_config_errors(tmp_path, capsys):
    (tmp_path / "c.json").write_text('{"batch": 3}')
    assert main(["bench", "--config", str(tmp_path / "c.json"), "--out", str(tmp_path / "o")]) == 2
    assert "unknown key(s) ['batch']" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_quick_and_full_configurations(tmp_path):
    (tmp_path / "empty.json").write_text("{}")
    quick, full = load_config(None, True), load_config(str(tmp_path / "empty.json"), False)
    assert full == FULL and load_config(None, False) == quick  # no --config: the quick configuration
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
