"""The CUDA target: compiled with nvcc for sm_80 and sm_90 everywhere; run and checked
against the reference only where a CUDA device is present (skipped otherwise, with the
reason "no CUDA device"). In CI (CI=true) a missing nvcc is a failure."""
import json
import re

import numpy as np
import onnx
import pytest

from lsnn import compiler
from lsnn.compiler.cli import main
from lsnn.compiler.onnx.export import export
from lsnn.targets import load, open_runtime
from lsnn.targets.artifact import ArtifactError
from lsnn.targets.base import TargetError, get_target
from lsnn.targets.cuda.device import cuda_device, device_arch
from lsnn.targets.cuda.nvcc import find_nvcc
from model_variants import hand_built, non_finite_feeds, small, spikes, static_shape

ARCHS = ["sm_80", "sm_90"]
FATBIN_MAGIC = bytes.fromhex("50ed55ba")  # 0xBA55ED50, little-endian


@pytest.fixture(autouse=True)
def needs_nvcc(nvcc):
    """Every test here compiles with nvcc (the conftest fixture: skip locally, fail in CI)."""


@pytest.fixture(scope="module")
def compiled():
    if find_nvcc() is None:
        return {}
    return {(kind, arch): (model, compiler.compile(model, "cuda", arch=arch))
            for kind in ("lsnn", "lstm") for model in [export(small(kind))] for arch in ARCHS}


def needs_gpu():
    """Skip without a GPU; with one, the architecture this suite compiles for it."""
    ok, why = cuda_device()
    if not ok:
        pytest.skip("no CUDA device")
    return device_arch()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["lsnn", "lstm"])
def test_compiles_machine_code_with_nvcc(compiled, kind, arch, tmp_path):
    _, art = compiled[kind, arch]
    info = art.manifest["cuda"]
    assert info["arch"] == arch and art.manifest["target"]["tvm_target"] == {"kind": "cuda", "arch": arch}
    assert re.fullmatch(r"Build cuda_\d+\.\d+\.r\d+\.\d+/compiler\.\d+_\d+", info["nvcc"]), info["nvcc"]
    (binary,) = info["binaries"]
    data = art.files[binary["file"]]
    assert data[:4] == FATBIN_MAGIC and len(data) > 1000
    kernel = "alif_kernel" if kind == "lsnn" else "lstm_kernel"
    usage = binary["ptxas"][kernel]
    assert usage["registers"] > 0 and usage["spill_stores"] == 0
    out = art.save(tmp_path / "art")
    manifest = json.loads((out / "manifest.json").read_text())
    assert binary["file"] in manifest["files"] and (out / binary["file"]).read_bytes() == data


def test_persistent_kernel_keeps_R_in_shared_memory_when_it_fits():
    target90, target80 = get_target("cuda", arch="sm_90"), get_target("cuda", arch="sm_80")
    dims = {"I": 80, "H": 220}  # the sMNIST LSNN: R^T is 194 KB
    k90 = target90.kernel("ALIF", thr=0.01, n_refractory=5, dims=dims, finite_weights=True).script()
    k80 = target80.kernel("ALIF", thr=0.01, n_refractory=5, dims=dims, finite_weights=True).script()
    assert "T.alloc_buffer((48400,), scope=\"shared.dyn\")" in k90  # H200/H100: 227 KB per block
    assert "48400" not in k80 and "RT[k, h]" in k80  # A100: 163 KB per block, the general path
    assert "RT[k, h]" not in k90


def test_cli_compile_arch_and_errors(tmp_path, capsys):
    model, _ = hand_built()
    path = tmp_path / "hand.onnx"
    onnx.save(model, str(path))
    assert main(["compile", str(path), "--target", "cuda", "--arch", "sm_80", "-o", str(tmp_path / "a")]) == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["target"]["tvm_target"] == {"kind": "cuda", "arch": "sm_80"}
    assert main(["compile", str(path), "--target", "cuda", "--arch", "sm_70", "-o", str(tmp_path / "b")]) == 2
    assert "target 'cuda': option arch='sm_70' is not one of sm_80, sm_90" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_without_a_gpu_loading_works_and_running_says_why(compiled, tmp_path):
    ok, _ = cuda_device()
    if ok:
        pytest.skip("a CUDA device is present")
    _, art = compiled["lsnn", "sm_90"]
    out = art.save(tmp_path / "art")
    loaded = load(out)
    with pytest.raises(TargetError, match="no CUDA device"):
        loaded.run({"X": spikes(T=5, B=1)})


@pytest.mark.parametrize("kind", ["lsnn", "lstm"])
def test_runs_and_matches_reference_on_the_gpu(compiled, kind):
    model, art = compiled[kind, needs_gpu()]
    for T, B in ((60, 1), (30, 5)):
        X = spikes(T=T, B=B, seed=T)
        ref = open_runtime(model, "torch").run({"X": X})
        got = art.run({"X": X})
        if kind == "lsnn":
            assert np.array_equal(got["Z"], ref["Z"])
        np.testing.assert_allclose(got["Y"], ref["Y"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["lsnn", "lstm"])
def test_non_finite_inputs_give_the_reference_result_on_the_gpu(kind):
    arch = needs_gpu()
    model = export(small(kind), streaming=True)
    art = compiler.compile(model, "cuda", arch=arch)
    feeds = non_finite_feeds(art)
    ref = open_runtime(model, "torch").run(feeds)
    got = art.run(feeds)
    if kind == "lsnn":
        assert np.array_equal(got["Z"], ref["Z"]) and 0 < ref["Z"].sum()
    for name in ref:
        assert np.array_equal(np.isnan(got[name]), np.isnan(ref[name])), name
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=name)


def test_static_shape_model_compiles_for_sm_90():
    model = static_shape(export(small("lsnn")), 40, 2)
    art = compiler.compile(model, "cuda", arch="sm_90")
    assert art.manifest["inputs"] == [{"name": "X", "shape": [40, 2, 7], "dtype": "float32"}]
    assert art.files[art.manifest["cuda"]["binaries"][0]["file"]][:4] == FATBIN_MAGIC


@pytest.mark.parametrize("name", ["../outside.fatbin", "/etc/hostname", "unlisted.fatbin"])
def test_fatbins_named_by_the_manifest_stay_inside_the_artifact(compiled, tmp_path, name):
    _, art = compiled["lsnn", "sm_90"]
    out = art.save(tmp_path / "art")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["cuda"]["binaries"][0]["file"] = name
    if name == "unlisted.fatbin":
        (out / name).write_bytes(b"\0")
    else:
        manifest["files"][name] = manifest["files"].pop(next(iter(manifest["files"])))
    with pytest.raises(ArtifactError, match="fatbin"):
        get_target("cuda").prepare_load(out, manifest)
