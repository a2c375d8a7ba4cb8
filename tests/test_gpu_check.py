"""The GPU check script, dry-run on the CPU: the bundle (artifacts, data, TVM's runtime without
its compiler) and the run script work end to end, the recurrent ONNX node cases included; on a GPU the same script times CUDA builds."""
import json
import os
import subprocess
import sys

from lsnn.reference.paths import ROOT


def test_gpu_check_dry_run_on_cpu(tmp_path, fashion_mnist):
    bundle = tmp_path / "bundle"
    subprocess.run([sys.executable, "bench/gpu_check.py", "prepare", "--device", "cpu", "--bundle", str(bundle),
                    "--models", "store-recall-lsnn,smnist-lstm"], cwd=ROOT, check=True, capture_output=True)
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(tmp_path / "out"), LSNN_GPU_BUNDLE=str(bundle))
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "run", "--limit", "2", "--batches", "1,2"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    res = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert res["passed"] and set(res["models"]) == {"store-recall-lsnn", "smnist-lstm"}
    cases = res["node_cases"]
    assert len(cases) >= 18 and set(cases.values()) == {"pass"}, cases
    assert {n.split("_")[1] for n in cases} == {"lstm", "gru", "rnn", "simple"}, sorted(cases)
    lstm = res["models"]["smnist-lstm"]
    assert lstm["latency_batch1"]["compiled"]["per_step_us"] > 0
    assert set(lstm["throughput"]) == {"1", "2"} and lstm["synops_estimate_uj"] > 0
    assert "| batch | compiled (seq/s) | PyTorch (seq/s) |" in (tmp_path / "out" / "gpu_check.md").read_text()
