"""Is there a CUDA device here? Asked without loading TVM's CUDA runtime when it cannot load."""
from __future__ import annotations

import ctypes


def cuda_device() -> tuple[bool, str]:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False, "no CUDA device (no NVIDIA driver: libcuda.so.1 not found)"
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return False, "no CUDA device (the driver reports none)"
    return True, ""


def device_arch() -> str:
    """The target architecture of device 0: ``sm_90`` for Hopper, ``sm_80`` for Ampere."""
    import tvm

    major = tvm.cuda(0).compute_version.split(".")[0]
    return "sm_90" if int(major) >= 9 else "sm_80"


def ensure_runtime() -> None:
    """Load TVM's CUDA runtime library (it registers the CUDA device and module loader); TVM
    loads it with its compiler, but not when only its runtime is present."""
    from pathlib import Path

    from tvm.base import _LOADED_LIBS, load_lib_ctypes

    if "tvm_runtime_cuda" not in _LOADED_LIBS:
        runtime_dir = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
        _LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(package="tvm", target_name="tvm_runtime_cuda",
                                                           extra_lib_paths=[runtime_dir], mode="RTLD_LOCAL")
