"""The Cortex-M kernels: instructions per step, what they store, Helium code on the M55, and the
spec's NaN/Inf meaning on the vectorised update.

Needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm (the arm_toolchain fixture:
skipped without them, a failure in CI).
"""
import re
import subprocess

import numpy as np
import pytest
import torch

from lsnn import compiler
from lsnn.compiler.onnx.export import export
from lsnn.reference import build_model
from lsnn.targets import open_runtime
from lsnn.targets.cortex_m.alif import alif_kernel

pytestmark = pytest.mark.usefixtures("arm_toolchain")

#: instructions per step (manifest profile: random spikes, rate 0.1) of the 40-in, 120-neuron, 5-out
#: LSNN below; measured 11,361 (M4) and 8,009 (M55), against 23,196 and 16,111 with the CPU kernels
#: rendered to C (V and A stored, state copied back each step, no Helium)
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
    model_c = _kernel_text(arts["cortex-m4"], "lsnn_model.c")
    step = model_c[model_c.index("void lsnn_step("):model_c.index("void lsnn_run(")]
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
