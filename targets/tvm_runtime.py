"""TVM's runtime, imported without PyTorch.

``tvm_ffi`` (which ``import tvm`` loads) imports ``torch`` first thing when it can,
a work-around of its own for a symbol clash on Windows, and with it its DLPack
bridge to PyTorch; that costs seconds and gigabytes of address space, and a
compiled artifact needs neither. :func:`import_tvm` hides ``torch`` while TVM loads,
when nothing has imported it yet; importing PyTorch afterwards works as usual."""
from __future__ import annotations

import importlib
import sys


def import_tvm():
    """The ``tvm`` module; PyTorch is not imported on the way unless it already was."""
    if "tvm" in sys.modules or "torch" in sys.modules:
        return importlib.import_module("tvm")
    sys.modules["torch"] = None  # makes "import torch" raise ImportError, which tvm_ffi tolerates
    try:
        return importlib.import_module("tvm")
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]
