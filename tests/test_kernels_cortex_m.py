"""The Cortex-M kernels: instructions per step, what they store, Helium code on the M55, and the
spec's NaN/Inf meaning on the vectorised update.

Needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm (the arm_toolchain fixture:
skipped without them, a failure in CI).
"""
import re
import subprocess

import numpy as np
import onnx
import pytest
import torch
import tvm
from tvm.script import tirx as T

from lsnn import compiler
from lsnn.compiler.onnx.export import export
from lsnn.reference import build_model
from lsnn.targets import open_runtime
from lsnn.targets.base import FUSED_READOUT
from lsnn.targets.cortex_m import CortexMTarget
from lsnn.targets.cortex_m.alif import alif_kernel
from lsnn.targets.cortex_m.events import blocks

pytestmark = pytest.mark.usefixtures("arm_toolchain")

#: instructions per step (manifest profile: random spikes, rate 0.1) of the 40-in, 120-neuron, 5-out
#: LSNN below; measured 11,220 (M4) and 7,784 (M55) with the readout in the ALIF kernel (11,361 and
#: 8,009 apart), against 23,196 and 16,111 with the CPU kernels rendered to C (V and A stored, state
#: copied back each step, no Helium)
BOUND = {"cortex-m4": 13_500, "cortex-m55": 9_500}
PROBES = ("Z", "final_v", "final_a", "final_z", "final_r")
#: the ALIF layer's kernel: alone, or with its LI readout (``lsnn_k_alif_li``)
ALIF_KERNEL = r"lsnn_k_alif\w*"


@pytest.fixture(scope="module")
def medium():
    torch.manual_seed(0)
    model = export(build_model("lsnn", n_in=40, n_out=5, n_lif=60, n_alif=60))
    return model, {core: compiler.compile(model, core) for core in BOUND}


def _kernel_text(art, name: str) -> str:
    return (art.folder / name).read_text()


def _step(art) -> str:
    """The C of ``lsnn_step``."""
    model_c = _kernel_text(art, "lsnn_model.c")
    return model_c[model_c.index("void lsnn_step("):model_c.index("void lsnn_run(")]


def _y_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with ``Y`` its only output, as ``lsnn bench`` compiles it: only the readout reads
    the spikes."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [o for o in out.graph.output if o.name == "Y"]
    del out.graph.output[:]
    out.graph.output.extend(kept)
    return out


def _disassembly(art, function: str) -> str:
    """The code of the kernel whose name matches ``function`` (a regular expression)."""
    # objdump decodes MVE instructions only when told the architecture
    out = subprocess.run(["arm-none-eabi-objdump", "-d", "-marmv8.1-m.main", str(art.folder / "lsnn_kernels.o")],
                         check=True, capture_output=True, text=True).stdout
    m = re.search(rf"<{function}>:\n(.*?)(?:\n\n|\Z)", out, re.S)
    assert m, f"{function} not in lsnn_kernels.o"
    return m.group(1)


@pytest.mark.parametrize("core", BOUND)
def test_instructions_per_step_of_an_lsnn(medium, core):
    _, arts = medium
    value = arts[core].manifest["footprint"]["instructions_per_step"]["value"]
    assert value <= BOUND[core], f"{core}: {value} instructions per step"


def test_helium_pays_on_the_m55(medium):
    _, arts = medium
    count = {core: arts[core].manifest["footprint"]["instructions_per_step"]["value"] for core in BOUND}
    assert count["cortex-m55"] < 0.8 * count["cortex-m4"], count


def test_dead_v_and_a_are_not_stored(medium):
    """The model reads the spikes only: the kernel stores neither V nor A (the CPU kernel rendered
    to C stored both every step)."""
    _, arts = medium
    c = _kernel_text(arts["cortex-m4"], "lsnn_kernels.c")
    assert re.search(r"\bZ_p\[[^\]]*\] = ", c)
    assert not re.search(r"\b[VA]_p\[[^\]]*\] = ", c)


def test_v_and_a_are_stored_when_read():
    def stores(outputs):
        script = alif_kernel(thr=0.01, n_refractory=2, dims={}, finite_weights=True, events=True, vector=False,
                             outputs=outputs).script()
        return {name for name in ("V", "A") if re.search(rf"\b{name}\[t, b, h\] = ", script)}

    assert stores(frozenset(PROBES)) == set()
    assert stores(frozenset(PROBES + ("V",))) == {"V"}
    assert stores(frozenset(PROBES + ("V", "A"))) == {"V", "A"}
    assert stores(None) == {"V", "A"}


def test_state_halves_swap_without_copies(medium):
    """Each kernel writes its next state into the other half of the state and its step outputs
    straight into the output frame: lsnn_step copies nothing."""
    _, arts = medium
    step = _step(arts["cortex-m4"])
    assert "lsnn_next" in step and "memcpy" not in step


def test_m55_update_is_helium_code(medium):
    """GCC vectorises the ALIF neuron update for MVE on the M55 (vector float arithmetic on q
    registers), and the M4 build has none."""
    _, arts = medium
    m55 = _disassembly(arts["cortex-m55"], ALIF_KERNEL)
    vector_float = re.findall(r"\tv(?:fma|fms|mul|sub|add)\.f32\tq\d", m55)
    assert len(vector_float) >= 4, "no MVE float arithmetic in lsnn_k_alif on the M55"
    assert re.search(r"\tvldrw\.u32\tq\d", m55) and re.search(r"\tvstrw\.32\tq\d", m55)
    assert re.search(r"\tvpsel\tq\d", m55)  # the spike and refractory selects, predicated
    assert not re.search(r"\tq\d", _disassembly(arts["cortex-m4"], ALIF_KERNEL))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("core", BOUND)
def test_nan_and_inf_follow_the_spec(medium, core):
    """NaN and Inf inputs are events; a NaN membrane never spikes; +Inf drives spikes: the same
    spikes and outputs as the reference, on the scalar and on the vectorised update."""
    model, arts = medium
    X = (np.random.default_rng(2).random((30, 3, 40)) < 0.2).astype(np.float32)
    X[5, 0, 3] = np.nan
    X[7, 1, 11] = np.inf
    X[9, 2, 0] = -np.inf
    ref = open_runtime(model, "torch").run({"X": X})
    got = arts[core].run({"X": X})
    assert got["Z"][6:, 1].sum() > 0  # the +Inf input made neurons spike
    assert np.array_equal(got["Z"], ref["Z"])
    for name in ref:
        assert np.allclose(got[name], ref[name], rtol=1e-5, atol=1e-5, equal_nan=True), name


@pytest.mark.parametrize("core", BOUND)
def test_readout_in_the_alif_kernel_matches_the_li_kernel(core, monkeypatch):
    """ALIF+LI: one kernel call per step, the spikes not stored when only the readout reads them,
    and the outputs of the ALIF and LI kernels apart, bit for bit. 13 neurons and 7 outputs: after a
    block of 8, tails of 4 + 1 and 4 + 2 + 1."""
    torch.manual_seed(1)
    model = _y_only(export(build_model("lsnn", n_in=9, n_out=7, n_lif=6, n_alif=7)))
    rng = np.random.default_rng(3)
    X = np.concatenate([(rng.random((60, 2, 9)) < 0.3), rng.normal(0, 2, (40, 2, 9))]).astype(np.float32)
    fused = compiler.compile(model, core)
    assert re.findall(r"\blsnn_k_\w+\(", _step(fused)) == ["lsnn_k_alif_li("]
    assert not re.search(r"\bZ_p\[[^\]]*\] = ", _kernel_text(fused, "lsnn_kernels.c"))
    monkeypatch.setattr(CortexMTarget, "kernels", {op: k for op, k in CortexMTarget.kernels.items()
                                                    if op != FUSED_READOUT})
    apart = compiler.compile(model, core)
    assert re.findall(r"\blsnn_k_\w+\(", _step(apart)) == ["lsnn_k_alif(", "lsnn_k_li("]
    Y = fused.run({"X": X})["Y"]
    assert np.array_equal(Y.view(np.uint32), apart.run({"X": X})["Y"].view(np.uint32))
    assert np.allclose(Y, open_runtime(model, "torch").run({"X": X})["Y"], rtol=1e-5, atol=1e-5)
    assert len(np.unique(Y[-1])) > 1  # the readout moved: spikes happened


@T.macro
def _count(first, width, A):
    for j in T.unroll(width):
        A[first + j] = A[first + j] + 1
        A[first + j + A.shape[0] // 2] = T.int32(width)


@T.prim_func
def _cover(a: T.handle):
    n2 = T.int64()
    A = T.match_buffer(a, (n2,), "int32")
    blocks(n2 // 2, _count, A)


def test_blocks_cover_every_index_once_widest_first():
    """events.blocks: full blocks of 8, then one block of each width 4, 2, 1 that n % 8 has."""
    f = tvm.compile(_cover, target="llvm")
    for n in range(0, 41):
        a = tvm.runtime.tensor(np.zeros(2 * n, np.int32))
        f(a)
        count, width = a.numpy()[:n], a.numpy()[n:]
        assert (count == 1).all(), n
        expected = [8] * (n // 8 * 8) + [w for w in (4, 2, 1) if n % 8 & w for _ in range(w)]
        assert width.tolist() == expected, n


def test_smnist_lsnn_on_the_m4_within_15000_instructions_per_step(fashion_mnist):
    """The committed sMNIST LSNN as ``lsnn bench`` measures it (the graph with ``Y`` its only output,
    the first 8 held-out sequences at the trained firing rates): at most 15,000 instructions per step
    on the M4 (15,137 with the LI readout a kernel of its own)."""
    from lsnn.compiler.onnx.export import export_checkpoint
    from lsnn.reference import checkpoint
    from lsnn.reference.paths import MODELS_DIR
    from lsnn.reference.tasks import task_from_config

    path = MODELS_DIR / "smnist-lsnn"
    _, config, _ = checkpoint.load(path)
    X, _ = next(iter(task_from_config(config["task"], fashion_mnist).heldout(8, 8)))
    art = compiler.compile(_y_only(export_checkpoint(path, heldout=0)), "cortex-m4")
    art.run({"X": X.numpy()}, ["Y"])
    assert art.last_run.instructions_per_step <= 15_000, art.last_run.instructions_per_step
