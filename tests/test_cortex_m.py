"""Cortex-M targets: compiled to C, built with arm-none-eabi-gcc, run under QEMU, checked
against the reference (differential testing) on every core.

These tests need gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm. Without
them they skip, except in CI (CI=true), where a missing tool is a failure.
"""
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from lsnn import compiler
from lsnn.compiler.cli import main
from lsnn.targets.verify import verify
from lsnn.compiler.importer import CompileError
from lsnn.compiler.onnx.export import export
from lsnn.reference import build_model
from lsnn.targets import load, open_runtime
from lsnn.targets.artifact import ArtifactError
from lsnn.targets.base import TargetError, get_target
from lsnn.targets.cortex_m import build as cm_build
from lsnn.targets.cortex_m import ctext, missing_tools, qemu
from model_variants import hand_built, small, spikes, static_shape

CORES = ["cortex-m4", "cortex-m7", "cortex-m55"]


pytestmark = pytest.mark.usefixtures("arm_toolchain")


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


def _bare_firmware(core: str, folder: Path, source: str, *flags: str) -> Path:
    """``source`` (a ``main``) with the project's start-up code and semihosting calls, built for ``core``."""
    target = get_target(core)
    for name in ("startup.c", "semihost.c", "semihost.h"):
        (folder / name).write_text(ctext.template(name))
    (folder / "app.c").write_text(source)
    (folder / "lsnn.ld").write_text(ctext.fill("lsnn.ld.in", cm_build.memory_map(target)))
    subprocess.run(["arm-none-eabi-gcc", *target.cflags, "-mthumb", "-O2", "-nostartfiles", "--specs=nano.specs",
                    "-T", "lsnn.ld", *flags, "startup.c", "semihost.c", "app.c", "-o", "app.elf"],
                   cwd=folder, check=True, capture_output=True)
    return folder / "app.elf"


@pytest.mark.parametrize("core", CORES)
def test_instruction_count_is_exact(core, tmp_path):
    """A loop of exactly 12,000,000 instructions reads as 12,000,000 on each board's clock."""
    target = get_target(core)
    run = qemu.run_firmware(_bare_firmware(core, tmp_path, CALIBRATE), target.board)
    assert run.exit_code == 0
    ticks = int(run.console.strip())
    assert ticks * 1e9 / target.sysclk_hz == 12_000_000


def test_instruction_counts_repeat_exactly(compiled):
    """Host calls between steps (16 KiB buffers: several per run here) do not change the count."""
    _, art = compiled["lsnn", "cortex-m4"]
    X = spikes(T=400, B=12, seed=9)
    counts = {art.run({"X": X}) and art.last_run.instructions for _ in range(3)}
    assert len(counts) == 1 and counts.pop() > 0


HOSTILE = r"""
#include <stdint.h>
#include "semihost.h"
static int call(int op, const void *arg) {
  register int r0 __asm__("r0") = op;
  register const void *r1 __asm__("r1") = arg;
  __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}
int main(void) {
#if defined(SYSTEM)
  static const char cmd[] = "touch " TARGET;
  uint32_t a[2] = {(uint32_t)cmd, sizeof cmd - 1};
  call(0x12, a);
#elif defined(REMOVE)
  uint32_t a[2] = {(uint32_t)TARGET, sizeof TARGET - 1};
  call(0x0E, a);
#elif defined(READ)
  char buf[64];
  int fd = sh_open(TARGET, 1);
  if (fd >= 0) sh_read(fd, buf, sizeof buf);
#else
  int fd = sh_open(TARGET, 5);
  if (fd >= 0) { sh_write(fd, "pwned\n", 6); sh_close(fd); }
#endif
  return 0;
}
"""


@pytest.mark.parametrize("call, refused", [("WRITE", "the file '{}' (write)"), ("READ", "the file '{}' (read)"),
                                           ("SYSTEM", "call 'system'"), ("REMOVE", "call 'unlink'")])
def test_firmware_cannot_reach_host_files(tmp_path, call, refused):
    """Semihosting goes to lsnn's harness, which serves input.bin, output.bin and the console only:
    a firmware that creates, reads or removes a host file or runs a command is stopped and named."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    target = tmp_path / ("victim.txt" if call in ("READ", "REMOVE") else "created.txt")
    elf = _bare_firmware("cortex-m4", tmp_path, HOSTILE, f"-D{call}", f'-DTARGET="{target}"')
    with pytest.raises(qemu.QemuError, match=re.escape(refused.format(target))):
        qemu.run_firmware(elf, "mps2-an386")
    assert not (tmp_path / "created.txt").exists() and victim.read_text() == "keep me\n"
    assert not list(Path(tempfile.gettempdir()).glob("lsnn-qemu-*/created.txt"))


# -- bad input: clear errors, nothing left behind ---------------------------------------------

def _leftovers(core) -> set:
    """The build folders of ``core`` in the temporary folder: a failed compile must add none. (A
    folder may vanish meanwhile: an artifact of an earlier test cleans its own up when collected.)"""
    return set(Path(tempfile.gettempdir()).glob(f"lsnn-{core}-*"))


def _over_time(model, op: str):
    """``model`` with ``op`` over the time axis of its output (CumSum or Softmax): not step-wise."""
    g = model.graph
    g.node[-1].output[0] = "Yraw"
    if op == "CumSum":
        g.node.append(helper.make_node("CumSum", ["Yraw", "axis0"], ["Y"]))
        g.initializer.append(onnx.numpy_helper.from_array(np.array(0, np.int64), "axis0"))
    else:
        g.node.append(helper.make_node(op, ["Yraw"], ["Y"], axis=0))
    return model


def test_model_that_mixes_time_steps_is_refused(tmp_path):
    """Open T and B: it can run neither step by step nor whole (that takes fixed shapes)."""
    model = _over_time(hand_built()[0], "CumSum")
    before = _leftovers("cortex-m4")
    with pytest.raises(CompileError, match=re.escape(
            "node 'Y' (CumSum) mixes time steps: its output 'Y' is not computed step by step") + ".*" +
            re.escape("; it cannot run whole (all its sequences in one call) either: graph input 'X' has shape "
                      "['T', 'B', 4], and that mode takes fixed shapes")):
        compiler.compile(model, "cortex-m4")
    assert not _leftovers("cortex-m4") - before


def test_model_that_mixes_time_steps_with_fixed_shapes_runs_whole():
    """Fixed T and B: the firmware runs the whole graph (ALIF, LI and a softmax over all T steps of
    both sequences) in one call, as the cpu does."""
    model = static_shape(_over_time(hand_built()[0], "Softmax"), 40, 2)
    X = spikes(40, 2, 4)
    art = compiler.compile(model, "cortex-m4")
    assert art.manifest["layout"]["runs"] == "whole" and art.manifest["layout"]["input_size"] == 40 * 2 * 4
    want = compiler.compile(model, "cpu").run({"X": X})["Y"]
    np.testing.assert_allclose(art.run({"X": X})["Y"], want, rtol=1e-4, atol=1e-5)
    assert art.last_run.steps == 1


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


# -- names, options and manifests from outside: no code, no paths out ---------------------------

EVIL = "X*/\n#define LSNN_INPUT_SIZE 0\nint lsnn_pwned = 1; /*"


def _renamed(model, old: str, new: str):
    for vi in list(model.graph.input) + list(model.graph.output):
        if vi.name == old:
            vi.name = new
    for node in model.graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    return model


def _without_comments(path: Path) -> str:
    """The C of ``path`` with its comments removed by the preprocessor (no macro expanded)."""
    return subprocess.run(["arm-none-eabi-gcc", "-fpreprocessed", "-dD", "-E", "-P", str(path)],
                          check=True, capture_output=True, text=True).stdout


def test_model_names_reach_c_only_as_escaped_comments(tmp_path):
    """ONNX names with a comment end, a newline and C code compile to the same model: in the
    generated C they are quoted, escaped comment text."""
    model, _ = hand_built()
    model = _renamed(_renamed(model, "X", EVIL), "Y", "Y */ #error injected /*")
    model.graph.node[0].name = "alif*/\n#define lsnn_step lsnn_gone\n/*"
    art = compiler.compile(model, "cortex-m4")
    out = art.save(tmp_path / "proj")
    for name in ("lsnn_model.h", "lsnn_model.c", "lsnn_kernels.c"):
        code = _without_comments(out / name)
        for injected in ("lsnn_pwned", "#error", "lsnn_gone", "LSNN_INPUT_SIZE 0"):
            assert injected not in code, (name, injected)
    header = (out / "lsnn_model.h").read_text()
    assert "#define LSNN_INPUT_SIZE 4\n" in header
    assert '"X*\\/\\n#define LSNN_INPUT_SIZE 0\\nint lsnn_pwned = 1; /\\*"' in header
    X = spikes(T=30, B=2, I=4, p=0.3)
    ref = open_runtime(hand_built()[0], "torch").run({"X": X})
    np.testing.assert_allclose(load(out).run({EVIL: X})["Y */ #error injected /*"], ref["Y"], rtol=1e-4, atol=1e-5)


def test_opt_option_is_a_choice_and_makefile_values_are_plain_words():
    with pytest.raises(TargetError, match="option opt='-O2 -fplugin=x' is not one of"):
        compiler.compile(hand_built()[0], "cortex-m4", opt="-O2 -fplugin=x")
    for bad in ("-O2 -fplugin=x", "-O2\nall:\n\ttouch pwned", "$(shell id)", "-O2;id", "-O2#"):
        with pytest.raises(CompileError, match="cannot go into the Makefile"):
            ctext.make_words(bad)
    assert ctext.make_words("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", 4096) == "-mcpu=cortex-m4 -mfpu=fpv4-sp-d16 4096"


def _tampered(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(changes)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def test_manifest_paths_stay_inside_the_project(compiled, tmp_path):
    """The ELF the manifest names must be a file of the folder: not ``../``, absolute, or a link out."""
    _, art = compiled["lsnn", "cortex-m4"]
    good = art.save(tmp_path / "proj")
    outside = tmp_path / "outside.elf"
    shutil.copy(good / "lsnn.elf", outside)
    cases = {"up": "../outside.elf", "absolute": str(outside), "link": "linked.elf"}
    for label, name in cases.items():
        folder = _tampered(good, tmp_path / label, library=name)
        if label == "link":
            (folder / "linked.elf").symlink_to(outside)
        with pytest.raises(ArtifactError, match=re.escape(str(folder / "manifest.json")) + ".*" + re.escape(repr(name))):
            load(folder)
    # the target named in the manifest loads it: no "kind" string needed
    plain = _tampered(good, tmp_path / "no-kind")
    manifest = json.loads((plain / "manifest.json").read_text())
    del manifest["kind"]
    (plain / "manifest.json").write_text(json.dumps(manifest))
    assert load(plain).elf == (plain / "lsnn.elf").resolve()


@pytest.mark.parametrize("shape, named", [((0, 1, 7), "T = 0"), ((5, 0, 7), "B = 0")])
def test_empty_time_or_batch_is_a_clean_error(compiled, shape, named):
    _, art = compiled["lsnn", "cortex-m4"]
    with pytest.raises(ArtifactError, match=f"input 'X' has shape {re.escape(str(list(shape)))}: {named}"):
        art.run({"X": np.zeros(shape, np.float32)})


def test_flash_overflow_names_the_region_and_the_bytes():
    """Weights of 2.2 MB against the 2 MB code region of the M55 board: the linker's cause is shown."""
    torch.manual_seed(0)
    model = export(build_model("lsnn", n_in=520, n_lif=260, n_alif=260, n_out=2).eval())
    before = _leftovers("cortex-m55")
    with pytest.raises(CompileError) as err:
        compiler.compile(model, "cortex-m55")
    msg = str(err.value)
    assert re.search(r"does not fit the memory of cortex-m55 \(QEMU board mps3-an547\): region FLASH \(2048 KiB\) "
                     r"overflowed by \d+ bytes \(its weights take 2173616 bytes\)", msg), msg
    assert "ld: region `FLASH' overflowed by" in msg and "collect2" not in msg
    assert not _leftovers("cortex-m55") - before


@pytest.mark.parametrize("kind, T, B", [("lsnn", 28, 1), ("lstm", 28, 1), ("lsnn", 20, 3)])
def test_static_shape_model_compiles_and_runs(kind, T, B):
    """Fixed T (and B), as torch.onnx.export writes by default: the step check runs the model's own T."""
    model = static_shape(export(small(kind)), T, B)
    art = compiler.compile(model, "cortex-m4")
    assert art.manifest["inputs"] == [{"name": "X", "shape": [T, B, 7], "dtype": "float32"}]
    X = spikes(T=T, B=B)
    ref = open_runtime(model, "torch").run({"X": X})
    got = art.run({"X": X})
    if kind == "lsnn":
        assert ref["Z"].sum() > 0 and np.array_equal(got["Z"], ref["Z"])
    np.testing.assert_allclose(got["Y"], ref["Y"], rtol=1e-4, atol=1e-5)



def test_initial_states_set_per_sequence_by_an_initializer():
    """An initial state given as a constant for a fixed batch of 3: each sequence starts from its row."""
    model, _ = hand_built()
    li = model.graph.node[1]
    li.input.append("y0")
    y0 = np.array([[0.5, -1.0], [2.0, 0.0], [-3.0, 1.5]], np.float32)
    model.graph.initializer.append(onnx.numpy_helper.from_array(y0, "y0"))
    art = compiler.compile(model, "cortex-m4")
    X = spikes(T=12, B=3, I=4, p=0.3)
    ref = open_runtime(model, "torch").run({"X": X})
    np.testing.assert_allclose(art.run({"X": X})["Y"], ref["Y"], rtol=1e-4, atol=1e-5)
    with pytest.raises(ArtifactError, match=re.escape("the model takes ['T', 3, 4] (axis 1 must be 3)")):
        art.run({"X": X[:, :2]})
