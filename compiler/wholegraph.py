"""A model run whole: every input in, every output out, one call per run, no state carried.

Targets without a sequence runtime (Cortex-M) run a model one time step per call
(:mod:`.stepgraph`) where they can. A model that the step graph refuses only for how it
treats time (:class:`~.stepgraph.NotStepwise`: a recurrent node walking time backwards or
stopping sequences at their own lengths, weights given at run time, an op mixing steps)
runs whole instead: the compiled kernels take all T steps of all B sequences at once, as
the CPU's do, so every input and output must fit the target's RAM together
(:meth:`WholePlan.check_fits`). The graph is the original; its inputs must declare fixed
shapes (the firmware's buffers are sized for them).

:class:`WholePlan` has the step plan's protocol (:class:`~.stepgraph.StepPlan`): the code
generator treats the whole run as a step with no state.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from .importer import CompileError
from .stepgraph import _dims

#: RAM the QEMU harness keeps beside the model's buffers: its two 16 KiB I/O buffers and a stack
HARNESS_RAM = 48 << 10


@dataclass
class WholePlan:
    model: onnx.ModelProto                      # the original graph
    why: str                                    # why it does not run step by step (names the node)
    frames: list = field(default_factory=list)  # [(name, shape)] every graph input, whole
    outputs: list = field(default_factory=list)  # [(name, shape)] every graph output, whole
    states: list = field(default_factory=list)  # none: nothing is carried from call to call
    sequence_inputs: list = field(default_factory=list)
    #: how the artifact cuts inputs into the firmware's frames (:mod:`lsnn.targets.cortex_m.artifact`)
    runs = "whole"
    #: what one call of the firmware runs (its header says so)
    call = ("The model runs whole: one call takes every input, all T steps of all B\n * sequences, "
            "and writes every output; nothing is kept between calls.")

    def initial_state(self, b: int = 0) -> np.ndarray:
        return np.zeros(0, np.float32)

    def initial_rows(self) -> int:
        return 1

    def check(self, model: onnx.ModelProto) -> None:
        """Nothing to check: the whole graph runs as it is."""

    def check_fits(self, layout: dict, workspace: int, target) -> None:
        """Refuse, naming the node and every byte count, a run whose inputs, outputs and
        intermediates do not fit ``target``'s RAM beside the harness."""
        ram = target.memory["RAM"][1]
        parts = {"inputs": 4 * layout["input_size"], "outputs": 4 * layout["output_size"],
                 "intermediates": layout["activations_bytes"], "kernel workspace": workspace,
                 "harness and stack": HARNESS_RAM}
        need = sum(parts.values())
        if need > ram:
            detail = ", ".join(f"{k} {v} bytes" for k, v in parts.items())
            raise CompileError(f"{self.why}; run whole (all its sequences in one call) it needs {need} bytes of RAM "
                               f"({detail}) and {target.name} (QEMU board {target.board}) has {ram} bytes: "
                               f"shorten the sequences or run fewer of them at once")


def _fixed_shape(vi, why: str, what: str) -> list[int]:
    dims = _dims(vi)
    if not dims and vi.type.tensor_type.HasField("shape"):
        return []
    if not vi.type.tensor_type.HasField("shape") or any(not isinstance(d, int) or d < 1 for d in dims):
        raise CompileError(f"{why}; it cannot run whole (all its sequences in one call) either: graph {what} "
                           f"'{vi.name}' has shape {dims or 'unknown'}, and that mode takes fixed shapes")
    return dims


def whole_graph(model: onnx.ModelProto, why: str) -> WholePlan:
    """The whole-run plan of ``model``, which the step graph refused for ``why``."""
    from .onnx.functions import attach

    inits = {t.name for t in model.graph.initializer}
    frames = [(vi.name, _fixed_shape(vi, why, "input")) for vi in model.graph.input if vi.name not in inits]
    try:
        inferred = onnx.shape_inference.infer_shapes(attach(model)).graph.output
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as e:
        raise CompileError(f"{why}; it cannot run whole either: ONNX shape inference failed: {e}") from e
    outputs = [(vi.name, _fixed_shape(vi, why, "output")) for vi in inferred]
    return WholePlan(model, why, frames, outputs)
