"""A compiled model: the exported library plus a manifest, runnable and saveable.

Folder layout: ``manifest.json`` (inputs and outputs with shapes and dtypes,
target, options, TVM version, SHA-256 of the source model and of the
library) and ``model.so``. Saving goes through
:func:`lsnn.reference.files.write_folder`: the folder is swapped in whole,
and only a new, empty or lsnn-written folder is replaced.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np


from .base import TargetError, get_target
from .runtime import Runtime
from .tvm_runtime import import_tvm
from lsnn.reference.errors import LsnnError, MissingFileError
from lsnn.reference.files import read_json, write_folder

FORMAT = "lsnn-artifact/1"
_DLPACK_CPU = 1  # DLPack's kDLCPU: the device's memory is the host's
#: bytes to which the compiled kernels assume their tensors aligned (TVM's allocation alignment)
ALIGNMENT = 64


def aligned(array: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``array`` whose data starts on an :data:`ALIGNMENT` boundary, so that
    an artifact on the CPU reads it in place."""
    raw = np.empty(array.nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    out = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out
MANIFEST = "manifest.json"
LIBRARY = "model.so"


class ArtifactError(LsnnError):
    """An artifact folder that cannot be loaded or run as it is."""


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Artifact(Runtime):
    name = "compiled"

    def __init__(self, module, manifest: dict, executable=None, files: dict | None = None):
        self.manifest = manifest
        self.files = files or {}  # extra files the artifact carries (e.g. CUDA fatbins)
        self.executable = executable  # kept for save(); None when loaded from disk
        self.inputs = [i["name"] for i in manifest["inputs"]]
        self.outputs = [o["name"] for o in manifest["outputs"]]
        self._output_index = {name: k for k, name in enumerate(self.outputs)}
        self._dtypes = {i["name"]: np.dtype(i["dtype"]) for i in manifest["inputs"]}
        self.target = manifest["target"]["name"]
        self._module = module
        self._vm = None
        self._main = None  # the VM's main function (looked up once: a lookup costs a call's setup)
        self._inputs_on_device: dict = {}  # name -> (device tensor, its host view or None), reused while shapes repeat

    def _machine(self):
        if self._vm is None:
            import_tvm()
            from tvm.runtime.vm import VirtualMachine  # runtime only: no compiler needed to run

            target = get_target(self.target, **self.manifest["target"]["options"])
            ok, why = target.can_run()
            if not ok:
                raise TargetError(f"cannot run a '{self.target}' artifact here: {why}")
            self._device = target.device()
            self._host = self._device.dlpack_device_type() == _DLPACK_CPU
            self._vm = VirtualMachine(self._module, self._device)
            self._main = self._vm["main"]
            self._run_target = target
        return self._vm

    def _staged(self, tvm, name: str, array: np.ndarray):
        """``array`` as the kernels take it. In host memory, used in place when it is contiguous
        and aligned as the kernels' vector loads assume (:data:`ALIGNMENT`; numpy aligns only to
        16 bytes: :func:`aligned` makes such arrays); otherwise copied to the device, into the
        tensor the last call of the same shape used (a fresh allocation per call costs as much as
        a short sequence's run), by numpy into a view of it where it is host memory (half the time
        of TVM's ``copyfrom``; at batch 64 of sMNIST the copy is 17 MB, ~2 ms that no thread
        shares)."""
        if self._host and array.flags.c_contiguous and array.flags.writeable \
                and array.ctypes.data % ALIGNMENT == 0:
            return tvm.runtime.from_dlpack(array)
        tensor, view = self._inputs_on_device.get(name, (None, None))
        if tensor is None or tuple(tensor.shape) != array.shape:
            tensor = tvm.runtime.empty(array.shape, str(array.dtype), self._device)
            view = np.from_dlpack(tensor) if self._host else None
            self._inputs_on_device[name] = tensor, view
        if view is not None:
            np.copyto(view, array)
        else:
            tensor.copyfrom(np.ascontiguousarray(array))
        return tensor

    def _fetched(self, tensor) -> np.ndarray:
        """An output as a numpy array: in host memory the tensor itself, shared without a copy
        (the array keeps it alive; the next run writes new tensors), else copied from the device.
        TVM's ``numpy()`` costs 50 us even for a small output, a sixth of a short sequence's run."""
        return np.from_dlpack(tensor) if self._host else tensor.numpy()

    def _check(self, inputs: dict[str, np.ndarray]) -> None:
        unknown = set(inputs) - set(self.inputs)
        if unknown:
            raise ArtifactError(f"unknown input(s) {sorted(unknown)}; the model takes {self.inputs}")
        env: dict[str, int] = {}
        for spec in self.manifest["inputs"]:
            name = spec["name"]
            if name not in inputs:
                raise ArtifactError(f"missing input '{name}'")
            arr = inputs[name]
            if arr.dtype != self._dtypes[name]:
                raise ArtifactError(f"input '{name}' is {arr.dtype}, the model takes {spec['dtype']}")
            if spec["shape"] is not None:
                _check_shape(name, arr.shape, spec["shape"], env)
            elif arr.size == 0:
                raise ArtifactError(f"input '{name}' has shape {list(arr.shape)}: it is empty")


    def run(self, inputs, outputs=None):
        tvm = import_tvm()
        self._check(inputs)
        unknown = [n for n in outputs or () if n not in self.outputs]
        if unknown:
            raise ArtifactError(f"unknown output(s) {unknown}; the model gives {self.outputs}")
        self._machine()
        args = [self._staged(tvm, n, inputs[n]) for n in self.inputs]
        self._run_target.before_run()
        result = self._main(*args)
        index = self._output_index
        return {n: self._fetched(result if len(index) == 1 else result[index[n]])  # only those asked for
                for n in (outputs or self.outputs)}

    def save(self, directory: str | Path) -> Path:
        if self.executable is None:
            raise ArtifactError("this artifact was loaded from disk; copy its folder instead")

        def fill(tmp: Path) -> dict:
            self.executable.export_library(str(tmp / LIBRARY))
            for name, data in self.files.items():
                (tmp / name).write_bytes(data)
            return dict(self.manifest, library=LIBRARY, library_sha256=sha256(tmp / LIBRARY),
                        files={name: sha256(tmp / name) for name in self.files})

        self.manifest = write_artifact(directory, fill)
        return Path(directory)


def _check_shape(name: str, shape: tuple, spec: list, env: dict) -> None:
    """``shape`` against the manifest's ``spec`` (ints and symbols, each symbol one size in ``env``)."""
    if len(shape) != len(spec):
        raise ArtifactError(f"input '{name}' has shape {list(shape)}, the model takes {spec}")
    for k, (d, n) in enumerate(zip(spec, shape)):
        if n == 0:
            raise ArtifactError(f"input '{name}' has shape {list(shape)}: {d if isinstance(d, str) else 'a dimension'}"
                                f" = 0; every dimension must be at least 1")
        if isinstance(d, int) and d != n:
            raise ArtifactError(f"input '{name}' has shape {list(shape)}, the model takes {spec} "
                                f"(axis {k} must be {d})")
        if isinstance(d, str) and env.setdefault(d, n) != n:
            raise ArtifactError(f"input '{name}' has shape {list(shape)}, the model takes {spec} ({d} = {env[d]})")


def write_artifact(directory: str | Path, fill, kind: str = "compiled artifact") -> dict:
    """Write an artifact folder whole: ``fill(tmp)`` writes the files and returns the manifest,
    which is written beside them (:func:`lsnn.reference.files.write_folder`)."""
    def fill_and_write(tmp: Path) -> dict:
        manifest = fill(tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest

    return write_folder(directory, fill_and_write, kind)


def inside(directory: Path, name, what: str) -> Path:
    """The file ``name`` that ``directory``'s manifest names, resolved (symbolic links followed)
    inside ``directory``: a name that is absolute, climbs out with ``..`` or leads out through a
    link is an ArtifactError naming the manifest and the path."""
    mpath = directory / MANIFEST
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        raise ArtifactError(f"{mpath}: the {what} path {name!r} is not a file name inside the artifact folder")
    path = (directory / name).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise ArtifactError(f"{mpath}: the {what} path {name!r} leads outside the artifact folder (to {path})")
    return path


def checked_file(directory: Path, name, digest, what: str) -> Path:
    """:func:`inside`, and the file must exist with the SHA-256 ``digest`` the manifest records."""
    path = inside(directory, name, what)
    if not path.is_file():
        raise ArtifactError(f"{directory}: the {what} {name} is missing")
    if sha256(path) != digest:
        raise ArtifactError(f"{path}: corrupt {what} (its SHA-256 does not match the manifest)")
    return path


def read_manifest(directory: Path) -> dict:
    mpath = directory / MANIFEST
    if not directory.is_dir():
        raise MissingFileError(f"artifact folder not found: {directory}")
    if not mpath.is_file():
        raise ArtifactError(f"{directory}: not an artifact folder ({MANIFEST} is missing)")
    manifest = read_json(mpath, ArtifactError, "manifest")
    if manifest.get("format") != FORMAT:
        raise ArtifactError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def load(directory: str | Path) -> Artifact:
    """Load a saved artifact without recompiling; a damaged folder gets an error naming the problem.
    The target named in the manifest loads it (:meth:`~lsnn.targets.base.Target.load_artifact`)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    target = manifest.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("options"), dict):
        raise ArtifactError(f"{directory / MANIFEST}: no target (name and options)")
    return get_target(target.get("name"), **target["options"]).load_artifact(directory, manifest)


def load_library(target, directory: Path, manifest: dict) -> Artifact:
    """A TVM library artifact (the default of :meth:`~lsnn.targets.base.Target.load_artifact`):
    ``model.so`` and the extra files, each checked against the manifest's SHA-256."""
    tvm = import_tvm()  # TVM's runtime without PyTorch

    lib = checked_file(directory, manifest.get("library", LIBRARY), manifest.get("library_sha256"), "library")
    if manifest.get("tvm_version") != tvm.__version__:
        raise ArtifactError(f"{directory} was built with TVM {manifest.get('tvm_version')}, this is {tvm.__version__}")
    for name, digest in manifest.get("files", {}).items():
        checked_file(directory, name, digest, "file")
    if not target.can_run()[0]:  # loadable for inspection; running says why not
        return Artifact(None, manifest)
    target.prepare_load(directory, manifest)
    try:
        module = tvm.runtime.load_module(str(lib))
    except (OSError, RuntimeError, ValueError) as e:  # what the loader raises (TVM errors are RuntimeErrors)
        raise ArtifactError(f"{lib}: cannot load the library ({e})") from e
    return Artifact(module, manifest)
