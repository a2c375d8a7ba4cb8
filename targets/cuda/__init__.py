"""The CUDA target: persistent TIR kernels for NVIDIA GPUs, machine code from ``nvcc``.

``arch`` is ``sm_90`` (Hopper: H100, H200; default) or ``sm_80`` (Ampere: A100).
Sequence ops are one launch per call with the time loop inside
(:mod:`.alif`, :mod:`.li`, :mod:`.lstm`; :mod:`.recurrent` for ONNX's LSTM, GRU and RNN in general); the rest of the graph is scheduled by
TVM's dlight rules in the default Relax pipeline for GPUs. Compiling needs only
``nvcc``; running needs a GPU (``can_run`` says "no CUDA device" otherwise).
"""
from __future__ import annotations

from ..base import RECURRENT, Option, Target, TargetError, register

#: opt-in shared memory per block (bytes): A100 (sm_80) 163 KiB, H100/H200 (sm_90) 227 KiB
SHARED_BYTES = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}


@register
class CudaTarget(Target):
    name = "cuda"
    kernels = {"ALIF": "lsnn.targets.cuda.alif:alif_kernel", "LI": "lsnn.targets.cuda.li:li_kernel",
               "LSTM": "lsnn.targets.cuda.lstm:lstm_kernel", RECURRENT: "lsnn.targets.cuda.recurrent:recurrent_kernel"}

    @classmethod
    def option_spec(cls) -> dict:
        return {"arch": Option("sm_90", "GPU architecture", choices=tuple(sorted(SHARED_BYTES))),
                "events": Option(True, "skip zero inputs and silent neurons in ALIF (false: the dense kernel)")}

    def kernel_settings(self, op: str) -> dict:
        if op == "ALIF":
            return {"events": self.options["events"], "shared_bytes": SHARED_BYTES[self.options["arch"]]}
        return {}

    def target_dict(self) -> dict:
        return {"kind": "cuda", "arch": self.options["arch"]}

    def tvm_target(self):
        import tvm

        host = {"kind": "llvm"}
        return tvm.target.Target({**self.target_dict(), "host": host})

    def can_run(self) -> tuple[bool, str]:
        from .device import cuda_device

        return cuda_device()

    def device(self):
        import tvm

        return tvm.cuda(0)

    def finalize(self, executable, manifest: dict) -> dict:
        """Compile the kernels with nvcc; returns the files the artifact carries."""
        from . import nvcc

        def cuda_modules(m):
            return ([m] if m.kind == "cuda" else []) + [c for i in m.imports for c in cuda_modules(i)]

        sources = [m.inspect_source("") for m in cuda_modules(executable.mod)]
        if not sources:
            raise TargetError("the compiled model has no CUDA module")
        files, binaries = {}, []
        for n, code in enumerate(sources):
            fatbin, usage = nvcc.compile_fatbin(code, self.options["arch"])
            name = f"kernels{n}.{self.options['arch']}.fatbin"
            files[name] = fatbin
            binaries.append({"file": name, "source_sha256": nvcc.source_key(code), "ptxas": usage})
        manifest["cuda"] = {"arch": self.options["arch"], "nvcc": nvcc.version(), "binaries": binaries}
        return files

    def prepare_load(self, directory, manifest: dict) -> None:
        """Hand the artifact's fatbins to TVM's CUDA loader."""
        from pathlib import Path

        from . import nvcc
        from .device import ensure_runtime

        from ..artifact import ArtifactError, inside

        checked = manifest.get("files", {})  # names whose SHA-256 load() has verified
        binaries = {}
        for b in manifest.get("cuda", {}).get("binaries", []):
            if b.get("file") not in checked:
                raise ArtifactError(f"{directory}: the fatbin {b.get('file')!r} is not among the manifest's "
                                    f"checked files")
            binaries[b["source_sha256"]] = inside(Path(directory), b["file"], "fatbin").read_bytes()
        ensure_runtime()
        nvcc.install_callback(binaries)
