"""ONNX LSTM, GRU and RNN in general for Cortex-M: the CPU target's kernel in its C form.

:func:`lsnn.targets.cpu.recurrent.recurrent_kernel` with ``vector=False`` (serial loops,
which TVM's C code generator prints and GCC turns into FPU code). A model the firmware runs
one time step per call (:mod:`lsnn.compiler.stepgraph`) calls it with T = 1; a direction that
walks time backwards (``reverse``, half of ``bidirectional``) or stops each sequence at its
own length (``sequence_lens``) makes the step graph refuse the model, which then runs whole,
one call per run (:mod:`lsnn.compiler.wholegraph`), and the kernel gets all T steps.
``Y``, ``Y_h`` and ``Y_c`` are always written (the state lives in the last two).
"""
from __future__ import annotations

from ..cells import Cell
from ..cpu.recurrent import OUTPUTS
from ..cpu.recurrent import recurrent_kernel as cpu_kernel


def recurrent_kernel(*, dims: dict, cell: Cell, outputs: frozenset | None = None):
    return cpu_kernel(dims=dims, cell=cell, outputs=OUTPUTS, vector=False)
