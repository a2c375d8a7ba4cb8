"""CUDA machine code for an artifact, made by ``nvcc`` when the model is compiled.

TVM 0.27 stores a CUDA module as source and compiles it when the library is
loaded (through the callback ``tvm_callback_cuda_compile``). Here the source is
compiled ahead of time with ``nvcc`` into a fatbin (SASS for the chosen
architecture plus its PTX) that ships with the artifact; at load time the
callback returns that fatbin for that source, so the GPU machine needs no
compiler and runs exactly the code that was checked.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from lsnn.reference.errors import LsnnError


class NvccError(LsnnError):
    """nvcc is missing or rejected the generated CUDA."""


def find_nvcc() -> str | None:
    path = shutil.which("nvcc")
    if path:
        return path
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if root and Path(root, "bin", "nvcc").is_file():
            return str(Path(root, "bin", "nvcc"))
    return None


def version() -> str:
    nvcc = find_nvcc()
    if nvcc is None:
        return ""
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1] if out.strip() else ""


def source_key(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def compile_fatbin(code: str, arch: str, timeout: float = 600) -> tuple[bytes, dict]:
    """``code`` compiled for ``arch`` (``sm_80``, ``sm_90``): SASS plus PTX, as a fatbin, and
    what ptxas reports per kernel (registers, spills, static shared memory)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise NvccError("nvcc not found (install the CUDA toolkit, or set CUDA_HOME)")
    cc = arch.removeprefix("sm_")
    with tempfile.TemporaryDirectory(prefix="lsnn-nvcc-") as tmp:
        src, out = Path(tmp, "kernels.cu"), Path(tmp, "kernels.fatbin")
        src.write_text(code)
        cmd = [nvcc, "--fatbin", "-O3", "-Xptxas", "-v", f"-gencode=arch=compute_{cc},code=sm_{cc}",
               f"-gencode=arch=compute_{cc},code=compute_{cc}", "-o", str(out), str(src)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise NvccError(f"nvcc failed for {arch}:\n" + "\n".join(proc.stderr.strip().splitlines()[-15:]))
        return out.read_bytes(), ptxas_report(proc.stderr)


def ptxas_report(text: str) -> dict:
    """``{kernel: {"registers", "spill_stores", "spill_loads", "static_shared_bytes"}}`` from
    ``ptxas -v`` (dynamic shared memory is set at launch and not listed)."""
    usage, name = {}, None
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name = m.group(1)
            usage[name] = {}
            continue
        if name is None:
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            usage[name].update(spill_stores=int(m.group(1)), spill_loads=int(m.group(2)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            usage[name]["registers"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            usage[name]["static_shared_bytes"] = int(s.group(1)) if s else 0
    return usage


_BINARIES: dict[str, bytes] = {}


def install_callback(binaries: dict[str, bytes]) -> None:
    """Make TVM's loader use these precompiled binaries (source SHA-256 -> fatbin)."""
    import tvm_ffi

    _BINARIES.update(binaries)

    def compile_cb(code, *_):
        key = source_key(str(code))
        if key not in _BINARIES:
            raise NvccError("this CUDA module has no precompiled binary in the artifact; recompile the model")
        return bytearray(_BINARIES[key])  # what TVM's own callback returns

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_cb, override=True)
