"""ONNX LSTM, GRU and RNN in general for Cortex-M: the CPU target's kernel in its C form.

:func:`lsnn.targets.cpu.recurrent.recurrent_kernel` with ``vector=False`` (serial loops,
which TVM's C code generator prints and GCC turns into FPU code). The firmware runs a model
one time step per call (:mod:`lsnn.compiler.stepgraph`), so a direction that walks time
backwards (``reverse``, half of ``bidirectional``) or stops each sequence at its own length
(``sequence_lens``) cannot run: the whole sequence is never there. Those are refused.
``Y``, ``Y_h`` and ``Y_c`` are always written (the state lives in the last two).
"""
from __future__ import annotations

from ..base import TargetError
from ..cells import Cell
from ..cpu.recurrent import OUTPUTS
from ..cpu.recurrent import recurrent_kernel as cpu_kernel

WHY = "Cortex-M runs a model one time step per call and never holds the whole sequence"


def recurrent_kernel(*, dims: dict, cell: Cell, outputs: frozenset | None = None):
    if cell.reverse:
        raise TargetError(f"{cell.op} direction reverse (or bidirectional) walks time backwards: {WHY}; "
                          f"only direction=forward runs on Cortex-M")
    if cell.sequence_lens:
        raise TargetError(f"{cell.op} sequence_lens stops each sequence at its own length: {WHY}; "
                          f"run sequences of the steps they have instead")
    return cpu_kernel(dims=dims, cell=cell, outputs=OUTPUTS, vector=False)
