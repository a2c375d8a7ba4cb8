"""ONNX LSTM for Cortex-M: the CPU target's TIR kernel without register blocking, rendered to C.

TVM's C code generator cannot print the vector types of the blocked recurrent
product, so the rows of ``R^T`` of each nonzero ``h[k]`` are accumulated one by
one (``vector=False``, the target's kernel setting): contiguous loops that GCC
turns into FPU (or Helium) code.
"""
from __future__ import annotations

from ..cpu.lstm import lstm_kernel

__all__ = ["lstm_kernel"]
