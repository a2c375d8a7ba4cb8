"""The GPU check of the CUDA target, in two halves.

``prepare`` (here, with the compiler and nvcc): export every committed checkpoint,
compile it for ``--arch`` (the parity build carries verify's probes; a plain build is
timed; the sMNIST LSNN also with the dense ALIF kernel), and bundle the artifacts, the
ONNX files, the held-out Fashion-MNIST file, TVM's runtime (no compiler: 30 MB instead of
300) and tvm-ffi for the GPU machine's Python into one folder that travels to the GPU.

``prepare`` also compiles ONNX's own node test cases of the recurrent ops (``LSTM``, ``GRU``,
``RNN``: every form, :mod:`lsnn.targets.cuda.recurrent`) with their inputs and expected outputs.

``run`` (on the GPU machine, TVM runtime only): each recurrent node case within its own
tolerance, then for each model
  * parity: ``lsnn verify`` of the CUDA build against the reference, held-out and random;
  * latency per step at batch 1: median of timed calls, CUDA build against the PyTorch
    reference on the same GPU (``torch.nn.LSTM``, cuDNN, for the LSTM);
  * throughput from batch 1 to 4096, both;
  * energy per inference from NVML's energy counter, beside the synaptic-operation estimate.
Results go to ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``. ``--device cpu`` runs the same
script on CPU artifacts, to check the bundle and the script without a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lsnn.reference.files import atomic_write, check_destination, write_folder
from lsnn.reference.paths import DEFAULT_DATA_DIR, MODELS_DIR, ROOT, committed_models

TIMED = ["smnist-lsnn", "smnist-lstm"]
BATCHES = [1, 4, 16, 64, 256, 1024, 4096]
TVM_SKIP = ("libtvm_compiler.so", "3rdparty", "include", "src", "web", "__pycache__")


# -- prepare (this machine) ------------------------------------------------------------------

def prepare(bundle: Path, arch: str, device: str, python: str, models: list[str] | None = None) -> None:
    """Write the bundle folder (a new one, or one lsnn wrote: see :func:`write_folder`)."""
    import tvm

    models = committed_models() if models is None else models
    check_destination(bundle, "GPU bundle")

    def fill(tmp: Path) -> None:
        _compile_all(tmp, arch, device, models)
        cases = _compile_node_cases(tmp, arch, device)
        (tmp / "data").mkdir()
        for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
            shutil.copy(Path(DEFAULT_DATA_DIR) / f, tmp / "data" / f)
        # TVM's runtime alone (pure Python plus libtvm_runtime*.so)
        shutil.copytree(Path(tvm.__file__).parent, tmp / "site" / "tvm", ignore=shutil.ignore_patterns(*TVM_SKIP))
        _tvm_ffi(tmp, device, python)
        (tmp / "bundle.json").write_text(json.dumps({"device": device, "arch": arch, "models": models,
                                                      "timed": [m for m in TIMED if m in models],
                                                      "node_cases": cases,
                                                      "tvm": tvm.__version__}, indent=1))

    write_folder(bundle, fill, "GPU bundle")
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    print(f"bundle {bundle}: {size / 2**20:.1f} MiB")


def _compile_all(tmp: Path, arch: str, device: str, models: list[str]) -> None:
    """ONNX files and artifacts: each model's parity build (verify's probes) and plain build, and
    the sMNIST LSNN's dense-ALIF build."""
    import onnx
    from lsnn.compiler import compile
    from lsnn.compiler.onnx.export import export_checkpoint
    from lsnn.targets.parity import add_probes
    from tqdm import tqdm

    (tmp / "onnx").mkdir(parents=True)
    target = {"target": "cuda", "arch": arch} if device == "cuda" else {"target": "cpu"}
    jobs = [(m, kind) for m in models for kind in ("parity", "plain")]
    jobs += [(m, "dense") for m in models if m == "smnist-lsnn"]
    for name, kind in tqdm(jobs, desc="compile", dynamic_ncols=True):
        proto = export_checkpoint(MODELS_DIR / name)
        onnx.save(proto, str(tmp / "onnx" / f"{name}.onnx"))
        if kind == "parity":
            proto = add_probes(proto)[0]
        options = dict(target, **({"events": False} if kind == "dense" else {}))
        compile(proto, options.pop("target"), **options).save(tmp / "artifacts" / f"{name}.{kind}")


def _compile_node_cases(tmp: Path, arch: str, device: str) -> list[dict]:
    """ONNX's node test cases of the recurrent ops: an artifact and an ``.npz`` of inputs and
    expected outputs each (``in{set}_{k}``, ``out{set}_{k}``); returns what ``run`` needs of them."""
    import warnings

    import numpy as np
    from lsnn.compiler import compile
    from lsnn.compiler.onnx.schema import RECURRENT
    from tqdm import tqdm

    with warnings.catch_warnings():  # the case generators divide by zero on purpose
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases

        chosen = sorted((c for c in collect_testcases() if c.model.graph.node[0].op_type in RECURRENT),
                        key=lambda c: c.name)
    options = {"arch": arch} if device == "cuda" else {}
    (tmp / "node-cases").mkdir()
    out = []
    for case in tqdm(chosen, desc="node cases", dynamic_ncols=True):
        compile(case.model, "cuda" if device == "cuda" else "cpu", **options).save(tmp / "node-cases" / case.name)
        fixed = {i.name for i in case.model.graph.initializer}
        inputs = [vi.name for vi in case.model.graph.input if vi.name not in fixed]
        arrays = {f"in{s}_{k}": a for s, (ins, _) in enumerate(case.data_sets) for k, a in enumerate(ins)}
        arrays.update({f"out{s}_{k}": a for s, (_, outs) in enumerate(case.data_sets) for k, a in enumerate(outs)})
        np.savez(tmp / "node-cases" / f"{case.name}.npz", **arrays)
        out.append({"name": case.name, "inputs": inputs, "outputs": [vi.name for vi in case.model.graph.output],
                    "sets": len(case.data_sets), "rtol": case.rtol, "atol": case.atol})
    return out


def _run_node_cases(bundle: Path, cases: list[dict]) -> dict[str, str]:
    """Each case's outcome: "pass", or what differs (or the error at run time)."""
    import numpy as np
    from lsnn.reference.errors import LsnnError
    from lsnn.targets import load

    outcomes = {}
    for c in cases:
        art = load(bundle / "node-cases" / c["name"])
        data = np.load(bundle / "node-cases" / f"{c['name']}.npz")
        outcome = "pass"
        for s in range(c["sets"]):
            try:
                got = art.run({n: data[f"in{s}_{k}"] for k, n in enumerate(c["inputs"])})
            except LsnnError as e:
                outcome = f"error: {e}"
                break
            for k, name in enumerate(c["outputs"]):
                want = data[f"out{s}_{k}"]
                if got[name].shape != want.shape or not np.allclose(got[name], want, rtol=c["rtol"], atol=c["atol"]):
                    err = np.abs(got[name] - want).max() if got[name].shape == want.shape else "shape"
                    outcome = f"wrong: output '{name}' (data set {s}): max abs error {err}"
            if outcome != "pass":
                break
        outcomes[c["name"]] = outcome
    return outcomes


def _tvm_ffi(tmp: Path, device: str, python: str) -> None:
    """tvm-ffi for the GPU machine's Python (a wheel), or this one's (the CPU dry run)."""
    import tvm_ffi

    if device == "cuda":
        version = tvm_ffi.__version__
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp", "--platform", "manylinux_2_28_x86_64",
               "--platform", "manylinux_2_17_x86_64", "-d", str(tmp / "wheels"), f"apache-tvm-ffi=={version}"]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit(f"cannot download apache-tvm-ffi {version} for Python {python}")
    else:
        shutil.copytree(Path(tvm_ffi.__file__).parent, tmp / "site" / "tvm_ffi",
                        ignore=shutil.ignore_patterns("__pycache__"))


# -- run (the GPU machine) -------------------------------------------------------------------

def _sync(device: str):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: str, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return ts


class Energy:
    """Board energy from NVML's counter (millijoules since the driver loaded)."""

    def __init__(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception as e:  # no NVML: report why
            self.nvml, self.why = None, f"NVML unavailable: {e}"

    def joules(self, fn, device: str, min_seconds: float = 2.0) -> dict | None:
        if self.nvml is None:
            return None
        fn()
        _sync(device)
        n, e0, t0 = 0, self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle), time.perf_counter()
        while time.perf_counter() - t0 < min_seconds:
            fn()
            n += 1
        _sync(device)
        e1, t1 = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle), time.perf_counter()
        return {"calls": n, "joules": (e1 - e0) / 1000, "seconds": t1 - t0, "watts": (e1 - e0) / 1000 / (t1 - t0)}


def run(bundle: Path, out: Path, limit: int, batches: list[int] = BATCHES) -> dict:
    import torch
    from lsnn.targets import load
    from lsnn.targets.verify import format_report, verify

    meta = json.loads((bundle / "bundle.json").read_text())
    device = meta["device"]
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    if device == "cuda":
        from lsnn.targets.cuda.device import ensure_runtime

        ensure_runtime()
        gpu = torch.cuda.get_device_name(0)
    else:
        gpu = "cpu (dry run)"
    energy = Energy() if device == "cuda" else None
    results = {"device": gpu, "arch": meta["arch"], "tvm": meta["tvm"], "torch": torch.__version__, "models": {}}
    lines = [f"# GPU check: {gpu}", ""]
    cases = results["node_cases"] = _run_node_cases(bundle, meta["node_cases"])
    failed = {n: o for n, o in cases.items() if o != "pass"}
    lines += ["## ONNX node cases of LSTM, GRU and RNN", "",
              f"{len(cases) - len(failed)} of {len(cases)} pass"] + [f"- {n}: {o}" for n, o in failed.items()] + [""]
    print(lines[-2 - len(failed)], flush=True)
    for name in meta["models"]:
        onnx_path = bundle / "onnx" / f"{name}.onnx"
        t0 = time.perf_counter()
        art = load(bundle / "artifacts" / f"{name}.parity")
        report = verify(onnx_path, art, data_dir=str(bundle / "data"), limit=limit, progress=False,
                        threads=torch.get_num_threads())
        entry = {"parity": report, "verify_seconds": time.perf_counter() - t0}
        lines += [f"## {name}", "", "```", format_report(report), "```", ""]
        print(format_report(report), flush=True)
        if name in meta["timed"]:
            entry.update(_timings(name, bundle, device, energy, batches))
            lines += _timing_lines(entry)
        results["models"][name] = entry
        _write(out / "gpu_check.json", json.dumps(results, indent=1, default=float))  # what is done so far
        _write(out / "gpu_check.md", "\n".join(lines) + "\n")
    results["passed"] = all(m["parity"]["passed"] for m in results["models"].values()) and not failed
    _write(out / "gpu_check.json", json.dumps(results, indent=1, default=float))
    return results


def _write(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _timings(name: str, bundle: Path, device: str, energy, batches: list[int]) -> dict:
    import numpy as np
    import torch
    from lsnn.bench.energy import E_AC_PJ as E_AC
    from lsnn.bench.energy import E_MAC_PJ as E_MAC
    from lsnn.bench.energy import model_ops
    from lsnn.reference import checkpoint
    from lsnn.reference.modules import RecurrentNet
    from lsnn.reference.tasks import task_from_config
    from lsnn.targets import load

    model, config, _ = checkpoint.load(MODELS_DIR / name)
    task = task_from_config(config["task"], str(bundle / "data"))
    X1, _ = next(iter(task.heldout(1, 1)))
    X1 = X1.numpy()
    T = X1.shape[0]
    arts = {"compiled": load(bundle / "artifacts" / f"{name}.plain")}
    if (bundle / "artifacts" / f"{name}.dense").is_dir():
        arts["compiled, dense ALIF"] = load(bundle / "artifacts" / f"{name}.dense")
    ref = model.to(device).eval()
    out = {"steps": T, "latency_batch1": {}, "throughput": {}, "energy": {}}
    for label, art in arts.items():
        ts = _time(lambda: art.run({"X": X1}, ["Y"]), device, repeats=20)
        out["latency_batch1"][label] = {"per_call_s": float(np.median(ts)), "per_step_us": float(np.median(ts)) / T * 1e6}
    xt = torch.from_numpy(X1).to(device)
    with torch.no_grad():
        ts = _time(lambda: ref(xt), device, repeats=10)
    label = (f"pytorch (torch.nn.{model.layer_class.__name__}, cuDNN)" if isinstance(model, RecurrentNet)
             else "pytorch reference (eager)")
    out["latency_batch1"][label] = {"per_call_s": float(np.median(ts)), "per_step_us": float(np.median(ts)) / T * 1e6}
    out["speedup_batch1_vs_pytorch"] = out["latency_batch1"][label]["per_call_s"] / \
        out["latency_batch1"]["compiled"]["per_call_s"]
    for B in batches:
        XB = np.ascontiguousarray(np.repeat(X1, B, axis=1))
        ts = _time(lambda: arts["compiled"].run({"X": XB}, ["Y"]), device, repeats=3, warmup=1)
        xb = torch.from_numpy(XB).to(device)
        with torch.no_grad():
            tr = _time(lambda: ref(xb), device, repeats=3, warmup=1)
        out["throughput"][B] = {"compiled_seq_per_s": B / float(np.median(ts)),
                                "pytorch_seq_per_s": B / float(np.median(tr))}
        print(f"{name} B={B}: compiled {B / np.median(ts):.1f} seq/s, pytorch {B / np.median(tr):.1f} seq/s", flush=True)
    # synaptic-operation estimate for the same input (NeuroBench counts, Horowitz energies)
    with torch.no_grad():
        o = model.to("cpu")(torch.from_numpy(X1))
    layer = model_ops(model, X1, None if o.Z is None else o.Z.numpy())
    acs, macs = sum(v.acs for v in layer.values()), sum(v.macs for v in layer.values())
    out["synops_estimate_uj"] = (acs * E_AC + macs * E_MAC) * 1e-6
    if energy is not None:
        for B in (1, max(batches)):
            XB = np.ascontiguousarray(np.repeat(X1, B, axis=1))
            e = energy.joules(lambda: arts["compiled"].run({"X": XB}, ["Y"]), device)
            if e:
                e["uj_per_inference"] = e["joules"] / (e["calls"] * B) * 1e6
            out["energy"][B] = e
    return out


def _timing_lines(e: dict) -> list[str]:
    lines = ["| build | batch-1 latency per step |", "|---|---|"]
    lines += [f"| {k} | {v['per_step_us']:.2f} us |" for k, v in e["latency_batch1"].items()]
    lines += ["", f"Speed-up at batch 1 over PyTorch on the same GPU: {e['speedup_batch1_vs_pytorch']:.1f}x", "",
              "| batch | compiled (seq/s) | PyTorch (seq/s) |", "|---|---|---|"]
    lines += [f"| {b} | {v['compiled_seq_per_s']:.1f} | {v['pytorch_seq_per_s']:.1f} |" for b, v in e["throughput"].items()]
    lines += ["", f"Synaptic-operation estimate: {e['synops_estimate_uj']:.3f} uJ per inference"]
    for b, v in e["energy"].items():
        if v:
            lines.append(f"NVML, batch {b}: {v['uj_per_inference']:.1f} uJ per inference (board, {v['watts']:.0f} W)")
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("--bundle", default=str(ROOT / "runs" / "gpu-bundle"))
    a.add_argument("--arch", default="sm_90")
    a.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    a.add_argument("--python", default="3.12", help="Python version of the GPU machine")
    a.add_argument("--models", default=",".join(committed_models()), help="checkpoints under models/")
    b = sub.add_parser("run")
    b.add_argument("--bundle", default=str(ROOT / "runs" / "gpu-bundle"))
    b.add_argument("--out", default=os.environ.get("OUT", str(ROOT / "runs" / "gpu-check")))
    b.add_argument("--limit", type=int, default=64, help="held-out sequences for parity")
    b.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes for throughput")
    args = p.parse_args(argv)
    if args.cmd == "prepare":
        prepare(Path(args.bundle), args.arch, args.device, args.python, args.models.split(","))
        return 0
    res = run(Path(args.bundle), Path(args.out), args.limit, [int(b) for b in args.batches.split(",")])
    return 0 if res["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
