"""ai.lsnn::ALIF for Cortex-M: the CPU target's event-driven TIR kernel, rendered to C.

The kernel is plain scalar loops (time loop inside, rows of ``W^T`` and ``R^T``
accumulated only for nonzero inputs and for neurons that spiked), so TVM's C
code generator prints it as it is; ``events=False`` gives the dense kernel.
On the microcontroller it runs with ``T = 1`` per call, its state carried in
static RAM by the generated model code.
"""
from __future__ import annotations

from ..cpu.alif import alif_kernel

__all__ = ["alif_kernel"]
