"""Saved artifacts from outside: every path a manifest names stays in its folder, the target
named in the manifest loads it, and empty inputs are refused by name."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from lsnn.targets import load
from lsnn.targets.artifact import ArtifactError


def _tampered(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    edit(manifest)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def _library(name):
    return lambda m: m.update(library=name)


def _extra_file(name):
    return lambda m: m.update(files={name: m["library_sha256"]})


@pytest.mark.parametrize("field", [_library, _extra_file])
@pytest.mark.parametrize("how", ["up", "absolute", "link"])
def test_manifest_paths_are_resolved_inside_the_folder(tiny_artifact, tmp_path, field, how):
    """A library or extra file named ``../x``, by an absolute path or through a link out of the
    folder is refused, naming the manifest and the path (the outside file has the right SHA-256)."""
    outside = tmp_path / "outside.so"
    shutil.copy(tiny_artifact / "model.so", outside)
    name = {"up": "../outside.so", "absolute": str(outside), "link": "linked.so"}[how]
    folder = tmp_path / "art"
    _tampered(tiny_artifact, folder, field(name))
    if how == "link":
        (folder / "linked.so").symlink_to(outside)
    with pytest.raises(ArtifactError, match=re.escape(f"{folder / 'manifest.json'}: the ") + ".*" + re.escape(repr(name))):
        load(folder)


def test_a_link_inside_the_folder_is_fine(tiny_artifact, tmp_path):
    folder = _tampered(tiny_artifact, tmp_path / "art", _library("inner.so"))
    (folder / "inner.so").symlink_to("model.so")
    X = np.zeros((3, 1, 4), np.float32)
    np.testing.assert_array_equal(load(folder).run({"X": X})["Y"], load(tiny_artifact).run({"X": X})["Y"])


def test_the_target_in_the_manifest_loads_it(tiny_artifact, tmp_path):
    folder = _tampered(tiny_artifact, tmp_path / "art", lambda m: m.update(kind="cortex-m project"))
    assert type(load(folder)).__name__ == "Artifact"  # a cpu library, whatever "kind" says
    bad = _tampered(tiny_artifact, tmp_path / "bad", lambda m: m.pop("target"))
    with pytest.raises(ArtifactError, match="no target"):
        load(bad)


@pytest.mark.parametrize("shape, named", [((0, 2, 4), "T = 0"), ((7, 0, 4), "B = 0")])
def test_empty_time_or_batch_is_a_clean_error(tiny_artifact, shape, named):
    with pytest.raises(ArtifactError, match=re.escape(f"input 'X' has shape {list(shape)}: {named}")):
        load(tiny_artifact).run({"X": np.zeros(shape, np.float32)})


def test_outputs_of_a_run_survive_later_runs(tiny_artifact):
    """Outputs are handed out without a copy on the CPU: a later run (same shapes, so the same
    staging tensor and a recycled memory pool) must not overwrite what an earlier one returned,
    and changing an input array after a run must not change its outputs either."""
    art = load(tiny_artifact)
    rng = np.random.default_rng(0)
    X1 = (rng.random((50, 3, 4)) < 0.5).astype(np.float32) * 3
    first = art.run({"X": X1})
    kept = {k: v.copy() for k, v in first.items()}
    X1[:] = 0
    for _ in range(3):
        art.run({"X": (rng.random((50, 3, 4)) < 0.5).astype(np.float32) * 3})
    assert kept["Y"].any()
    for name, value in kept.items():
        np.testing.assert_array_equal(first[name], value)
    np.testing.assert_array_equal(art.run({"X": np.zeros((50, 3, 4), np.float32)})["Y"], 0 * kept["Y"])


def test_aligned_inputs_are_read_in_place_and_others_copied(tiny_artifact):
    """An aligned, contiguous input is given to the kernels as it is (no copy); a misaligned,
    strided or read-only one is copied; all give the same outputs."""
    from lsnn.targets.artifact import ALIGNMENT, aligned

    art = load(tiny_artifact)
    X = (np.random.default_rng(1).random((40, 3, 4)) < 0.4).astype(np.float32)
    inplace = aligned(X)
    assert inplace.ctypes.data % ALIGNMENT == 0 and np.array_equal(inplace, X)
    buffer = np.empty(X.size + 1, np.float32)
    shifted = buffer[1:].reshape(X.shape)  # 4 bytes off the alignment of the buffer
    shifted[...] = X
    strided = np.repeat(X, 2, axis=2)[:, :, ::2]
    readonly = aligned(X)
    readonly.flags.writeable = False
    want = art.run({"X": X})["Y"].copy()
    for variant in (inplace, shifted, strided, readonly):
        np.testing.assert_array_equal(art.run({"X": variant})["Y"], want)
    import tvm

    assert art._staged(tvm, "X", inplace).data_ptr() == inplace.ctypes.data  # noqa: SLF001 - the in-place path
    assert art._staged(tvm, "X", shifted).data_ptr() != shifted.ctypes.data  # noqa: SLF001
