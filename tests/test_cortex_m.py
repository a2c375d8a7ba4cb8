"""Cortex-M targets: compiled to C, built with arm-none-eabi-gcc, run under QEMU, checked
against the reference (differential testing) on every core.

These tests need gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm. Without
them they skip, except in CI (CI=true), where a missing tool is a failure.
"""
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lsnn import compiler
from lsnn.compiler.cli import main
from lsnn.targets.verify import verify
from lsnn.compiler.importer import CompileError
from lsnn.compiler.onnx.export import export
from lsnn.targets import load, open_runtime
from lsnn.targets.artifact import ArtifactError
from lsnn.targets.base import TargetError, get_target
from lsnn.targets.cortex_m import build as cm_build
from lsnn.targets.cortex_m import missing_tools
from test_onnx import hand_built, small, spikes

CORES = ["cortex-m4", "cortex-m7", "cortex-m55"]


@pytest.fixture(autouse=True)
def toolchain():
    missing = missing_tools()
    if missing:
        msg = (f"Cortex-M toolchain missing: {', '.join(missing)} "
               "(Debian: gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm make)")
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def compiled():
    out = {}
    for kind in ("lsnn", "lstm"):
        for core in CORES:
            if missing_tools():
                return out
            model = export(small(kind))
            out[kind, core] = (model, compiler.compile(model, core))
    return out


@pytest.mark.parametrize("core", CORES)
@pytest.mark.parametrize("kind", ["lsnn", "lstm"])
def test_matches_reference_on_every_core(compiled, kind, core):
    model, art = compiled[kind, core]
    ref_rt = open_runtime(model, "torch")
    for X in (spikes(T=60, B=2, seed=4), np.random.default_rng(5).normal(0, 1, (40, 2, 7)).astype(np.float32)):
        ref = ref_rt.run({"X": X})
        got = art.run({"X": X})
        if kind == "lsnn":
            assert got["Z"].sum() > 0 and np.array_equal(got["Z"], ref["Z"])
        np.testing.assert_allclose(got["Y"], ref["Y"], rtol=1e-4, atol=1e-5)
    assert art.last_run.instructions_per_step > 0


@pytest.mark.parametrize("kind", ["lsnn", "lstm"])
def test_streaming_two_calls_equal_one(kind):
    model = export(small(kind), streaming=True)
    art = compiler.compile(model, "cortex-m4")
    X = spikes(T=50, B=2)
    states = [i for i in art.inputs if i != "X"]
    spec = {i["name"]: i["shape"] for i in art.manifest["inputs"]}
    rng = np.random.default_rng(0)
    init = {n: (rng.random([d if isinstance(d, int) else 2 for d in spec[n]]) * 0.2).astype(np.float32)
            for n in states}
    whole = art.run({"X": X, **init})
    ref = open_runtime(model, "ort").run({"X": X, **init})
    for name in whole:
        np.testing.assert_allclose(whole[name], ref[name], rtol=1e-4, atol=1e-5)
    first = art.run({"X": X[:20], **init})
    second = art.run({"X": X[20:], **{i: first[i.replace("initial_", "final_")] for i in states}})
    np.testing.assert_array_equal(np.concatenate([first["Y"], second["Y"]]), whole["Y"])


def test_hand_built_bare_model_passes_verify(tmp_path):
    model, _ = hand_built()
    path = tmp_path / "hand.onnx"
    onnx.save(model, str(path))
    report = verify(path, "cortex-m55", progress=False)
    assert report["passed"], report
    assert all(d["spike_agreement"] == 1.0 for d in report["datasets"].values())


def test_project_folder_builds_loads_and_runs_without_recompiling(compiled, tmp_path):
    model, art = compiled["lsnn", "cortex-m7"]
    out = art.save(tmp_path / "proj")
    for name in ("lsnn_model.c", "lsnn_model.h", "lsnn_kernels.c", "lsnn_runtime.c", "startup.c", "main.c",
                 "semihost.c", "lsnn.ld", "Makefile", "lsnn.elf", "manifest.json"):
        assert (out / name).is_file(), name
    header = (out / "lsnn_model.h").read_text()
    for api in ("void lsnn_init(void)", "void lsnn_step(const float *x, float *y)",
                "void lsnn_run(int steps, const float *x, float *y)"):
        assert api in header
    kernels = (out / "lsnn_kernels.c").read_text()
    assert "tvm/ffi" not in kernels and "lsnn_k_alif" in kernels and "malloc" not in kernels
    fp = json.loads((out / "manifest.json").read_text())["footprint"]
    assert fp["model"]["flash_bytes"] > 4 * 7 * 10  # at least the weights
    assert fp["model"]["ram_bytes"] > 0 and fp["stack_bytes"] > 0
    assert fp["instructions_per_step"]["value"] > 0
    # the Makefile rebuilds the same ELF from the sources alone
    subprocess.run(["make", "-C", str(out), "clean", "all"], check=True, capture_output=True)
    X = spikes(T=30, B=1)
    ref = open_runtime(model, "torch").run({"X": X})
    np.testing.assert_allclose(load(out).run({"X": X})["Y"], ref["Y"], rtol=1e-4, atol=1e-5)


def test_cli_compile_run(tmp_path):
    model, _ = hand_built()
    path = tmp_path / "hand.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "--target", "cortex-m4", "-o", str(tmp_path / "m4")]) == 0
    X = spikes(T=40, B=2, I=4, p=0.3)
    np.savez(tmp_path / "in.npz", X=X)
    assert main(["run", str(tmp_path / "m4"), "--inputs", str(tmp_path / "in.npz"),
                 "--outputs", str(tmp_path / "out.npz")]) == 0
    ref = open_runtime(model, "torch").run({"X": X})
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["Y"], ref["Y"], rtol=1e-4, atol=1e-5)


def test_event_driven_alif_executes_fewer_instructions_than_dense():
    model = export(small("lsnn"))
    events = compiler.compile(model, "cortex-m4")
    dense = compiler.compile(model, "cortex-m4", events=False)
    X = spikes(T=80, B=1, p=0.1)
    np.testing.assert_array_equal(events.run({"X": X})["Z"], dense.run({"X": X})["Z"])
    ie, idn = events.last_run.instructions_per_step, dense.last_run.instructions_per_step
    assert ie < idn, (ie, idn)


CALIBRATE = r"""
#include <stdint.h>
#include "semihost.h"
static volatile uint32_t wraps;
void SysTick_Handler(void) { wraps++; }
static uint64_t ticks(void) {
  uint32_t hi, lo;
  do { hi = wraps; lo = *(volatile uint32_t *)0xE000E018; } while (hi != wraps);
  return ((uint64_t)hi << 24) + (0xFFFFFFu - lo);
}
int main(void) {
  *(volatile uint32_t *)0xE000E014 = 0xFFFFFF; *(volatile uint32_t *)0xE000E018 = 0;
  *(volatile uint32_t *)0xE000E010 = 7;
  while (*(volatile uint32_t *)0xE000E018 == 0) {}
  uint64_t t0 = ticks();
  __asm__ volatile("mov r0, #0\n ldr r1, =4000000\n 1: adds r0, r0, #1\n cmp r0, r1\n bne 1b\n" ::: "r0", "r1", "cc");
  uint64_t d = ticks() - t0;
  char buf[24]; int i = 22; buf[23] = 0; buf[22] = '\n';
  do { buf[--i] = (char)('0' + d % 10); d /= 10; } while (d);
  sh_puts(buf + i);
  return 0;
}
"""


@pytest.mark.parametrize("core", CORES)
def test_instruction_count_is_exact(core, tmp_path):
    """A loop of exactly 12,000,000 instructions reads as 12,000,000 on each board's clock."""
    target = get_target(core)
    for name in ("startup.c", "semihost.c", "semihost.h"):
        (tmp_path / name).write_text(cm_build._template(name))
    (tmp_path / "cal.c").write_text(CALIBRATE)
    memory, vectors, in_text = cm_build._memory(target)
    ld = cm_build._template("lsnn.ld.in")
    for k, v in {"@TARGET@": core, "@BOARD@": target.board, "@MEMORY@": memory, "@VECTORS@": vectors,
                 "@VECTORS_IN_TEXT@": in_text}.items():
        ld = ld.replace(k, v)
    (tmp_path / "lsnn.ld").write_text(ld)
    subprocess.run(["arm-none-eabi-gcc", *target.cflags, "-mthumb", "-O2", "-nostartfiles", "--specs=nano.specs",
                    "-T", "lsnn.ld", "startup.c", "semihost.c", "cal.c", "-o", "cal.elf"],
                   cwd=tmp_path, check=True, capture_output=True)
    proc = subprocess.run(["qemu-system-arm", "-M", target.board, "-nographic", "-semihosting-config",
                           "enable=on,target=native", "-icount", "shift=0", "-kernel", "cal.elf"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    ticks = int((proc.stdout + proc.stderr).strip())  # semihosting console output goes to stderr
    assert ticks * 1e9 / target.sysclk_hz == 12_000_000


# -- bad input: clear errors, nothing left behind ---------------------------------------------

def _leftovers(core):
    return sorted(Path(tempfile.gettempdir()).glob(f"lsnn-{core}-*"))


def test_model_that_mixes_time_steps_is_refused(tmp_path):
    model, _ = hand_built()
    g = model.graph
    g.node[-1].output[0] = "Yraw"
    g.node.append(helper.make_node("CumSum", ["Yraw", "axis0"], ["Y"]))
    g.initializer.append(onnx.numpy_helper.from_array(np.array(0, np.int64), "axis0"))
    before = _leftovers("cortex-m4")
    with pytest.raises(CompileError, match="output 'Y' is not computed step by step"):
        compiler.compile(model, "cortex-m4")
    assert _leftovers("cortex-m4") == before


def test_missing_toolchain_is_named(monkeypatch):
    import shutil

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda n: None if n == "arm-none-eabi-gcc" else real(n))
    with pytest.raises(TargetError, match="arm-none-eabi-gcc"):
        compiler.compile(hand_built()[0], "cortex-m4")


def test_corrupt_elf_and_wrong_inputs(compiled, tmp_path):
    _, art = compiled["lsnn", "cortex-m4"]
    out = art.save(tmp_path / "proj")
    with pytest.raises(ArtifactError, match="input 'X' has shape"):
        load(out).run({"X": np.zeros((5, 1, 3), np.float32)})
    with open(out / "lsnn.elf", "ab") as f:
        f.write(b"x")
    with pytest.raises(ArtifactError, match="corrupt ELF"):
        load(out)


def test_weights_must_be_constants():
    model, _ = hand_built()
    g = model.graph
    w = next(t for t in g.initializer if t.name == "W")
    g.input.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.dims)))
    g.initializer.remove(w)
    with pytest.raises(CompileError, match="W must be an initializer"):
        compiler.compile(model, "cortex-m4")
