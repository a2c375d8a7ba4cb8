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
