"""A model as one time step: ``(frame, state) -> (outputs, next state)``.

Targets without a sequence runtime (Cortex-M) run a model one step at a time
and keep the state of every sequence op (ALIF, LI, LSTM) in static memory.
:func:`step_graph` rewrites the graph so: each sequence op's initial-state
inputs become graph inputs and its final-state outputs graph outputs; every
other input and output keeps its time axis, of length 1. Whether the rest of
the graph is step-wise (each op treats time steps independently, as the
readouts of our models do) is checked by :func:`check_steps`, which compares
T single steps with one T-step run under onnxruntime.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from lsnn.compiler.onnx.schema import DOMAIN

from .importer import CompileError

# op -> (indices of its initial-state inputs, indices of its final-state outputs)
STATE_SLOTS = {"ALIF": ((6, 7, 8, 9), (3, 4, 5, 6)), "LI": ((4,), (1,)), "LSTM": ((5, 6), (1, 2))}
STATE_NAMES = {"ALIF": ("v", "a", "z", "r"), "LI": ("y",), "LSTM": ("h", "c")}


@dataclass
class State:
    """One state tensor of one sequence op, carried from step to step."""
    node: str
    name: str            # v, a, z, r, y, h or c
    input: str           # its input in the step graph
    output: str          # its next value, an output of the step graph
    shape: list          # static shape in the step graph (batch 1)
    source: str          # the original graph's initial-state tensor ("" when omitted)
    initial: np.ndarray | None = None  # its value when the original computes it from no input
    final: str = ""      # the original graph output that is its final value ("" if none)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class StepPlan:
    model: onnx.ModelProto                               # the step graph
    frames: list = field(default_factory=list)           # [(name, shape)] per-step inputs, time axis 1
    outputs: list = field(default_factory=list)          # [(name, shape)] per-step outputs, time axis 1
    states: list = field(default_factory=list)           # [State]
    sequence_inputs: list = field(default_factory=list)  # original inputs that only set a state

    def initial_state(self) -> np.ndarray:
        """All states, concatenated: their computed initial values, zeros where a graph input sets them."""
        parts = [(s.initial if s.initial is not None else np.zeros(s.shape, np.float32)).ravel() for s in self.states]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def _is_seq(node) -> bool:
    return (node.domain == DOMAIN and node.op_type in ("ALIF", "LI")) or \
        (node.domain in ("", "ai.onnx") and node.op_type == "LSTM")


def _dims(vi) -> list:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


def _state_shape(node, inits: dict, label: str) -> list:
    if node.op_type == "LSTM":
        R = inits.get(node.input[2])
        if R is None:
            raise CompileError(f"LSTM node '{label}': R must be an initializer to run step by step")
        return [1, 1, int(R.dims[2])]
    W = inits.get(node.input[1])
    if W is None:
        raise CompileError(f"{node.op_type} node '{label}': W must be an initializer to run step by step")
    return [1, int(W.dims[0])]


def step_graph(model: onnx.ModelProto) -> StepPlan:
    """The one-step form of ``model`` (batch 1) and how its tensors map to the original."""
    from onnx.utils import Extractor

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    graph_inputs = [vi for vi in g.input if vi.name not in inits]
    orig_outputs = [o.name for o in g.output]
    states: list[State] = []
    for i, node in enumerate(g.node):
        if not _is_seq(node):
            continue
        label = re.sub(r"\W", "_", node.name or f"{node.op_type.lower()}_{i}")
        ins, outs = STATE_SLOTS[node.op_type]
        while len(node.input) <= max(ins):
            node.input.append("")
        while len(node.output) <= max(outs):
            node.output.append("")
        shape = _state_shape(node, inits, label)
        for k, (si, so) in enumerate(zip(ins, outs)):
            name = STATE_NAMES[node.op_type][k]
            source = node.input[si]
            final = node.output[so] if node.output[so] in orig_outputs else ""
            node.input[si] = f"{label}_state_{name}"
            if not node.output[so]:
                node.output[so] = f"{label}_next_{name}"
            states.append(State(label, name, node.input[si], node.output[so], shape, source, final=final))
    finals = {s.final for s in states if s.final}
    consumers = {n for node in g.node for n in node.input}
    sources = {s.source for s in states}
    seq_inputs = [vi.name for vi in graph_inputs if vi.name in sources and vi.name not in consumers]
    frames = []
    for vi in graph_inputs:
        if vi.name in seq_inputs:
            continue
        dims = _dims(vi)
        if len(dims) < 2 or any(not isinstance(d, int) for d in dims[2:]):
            raise CompileError(f"input '{vi.name}' must be [T, B, ...] with fixed trailing dimensions "
                               f"to run step by step (it is {dims})")
        frames.append((vi.name, [1, 1, *dims[2:]]))
    for s in states:
        g.input.append(helper.make_tensor_value_info(s.input, TensorProto.FLOAT, s.shape))
        g.output.append(helper.make_tensor_value_info(s.output, TensorProto.FLOAT, s.shape))
    step_outputs = [n for n in orig_outputs if n not in finals]
    in_names = [n for n, _ in frames] + [s.input for s in states]
    out_names = list(dict.fromkeys(step_outputs + [s.output for s in states]))
    try:
        step = Extractor(m).extract_model(in_names, out_names)
    except Exception as e:
        raise CompileError(f"cannot cut the graph into one time step: {e}") from e
    if not step.functions:
        step.functions.extend(m.functions)
    if not step.metadata_props:
        step.metadata_props.extend(m.metadata_props)
    del step.graph.input[:]
    step.graph.input.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in frames] +
                            [helper.make_tensor_value_info(s.input, TensorProto.FLOAT, s.shape) for s in states])
    _initial_values(model, states)
    plan = StepPlan(step, frames, [], states, seq_inputs)
    plan.outputs = _output_shapes(plan, step_outputs)
    return plan


def _run_ort(model: onnx.ModelProto, feeds: dict, outputs: list) -> dict:
    from lsnn.targets import open_runtime

    return open_runtime(model, "ort", threads=1).run(feeds, outputs)


def _initial_values(model: onnx.ModelProto, states: list) -> None:
    """The value of each initial state the original graph computes itself (usually zeros)."""
    graph_inputs = {vi.name for vi in model.graph.input} - {t.name for t in model.graph.initializer}
    computed = [s for s in states if s.source and s.source not in graph_inputs]
    for s in states:
        if not s.source:
            s.initial = np.zeros(s.shape, np.float32)
    if not computed:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(s.source, TensorProto.FLOAT, None)
                              for s in computed if s.source not in have)
    feeds = _zero_feeds(model, states, T=1)
    values = _run_ort(probe, feeds, [s.source for s in computed])
    for s in computed:
        s.initial = np.asarray(values[s.source], np.float32).reshape(s.shape)


def _zero_feeds(model: onnx.ModelProto, states: list, T: int, rng=None) -> dict:
    """Inputs for batch 1: ``[T, 1, ...]`` frames, state-shaped initial states."""
    inits = {t.name for t in model.graph.initializer}
    state_shapes = {s.source: s.shape for s in states}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = _dims(vi)
        shape = state_shapes.get(vi.name) or [T if k == 0 else 1 if k == 1 else d for k, d in enumerate(dims)]
        feeds[vi.name] = (rng.normal(0, 1, shape) if rng is not None else np.zeros(shape)).astype(np.float32)
    return feeds


def _output_shapes(plan: StepPlan, names: list) -> list:
    feeds = {n: np.zeros(s, np.float32) for n, s in plan.frames}
    feeds.update({s.input: np.zeros(s.shape, np.float32) for s in plan.states})
    got = _run_ort(plan.model, feeds, names)
    return [(n, list(np.asarray(got[n]).shape)) for n in names]


def check_steps(model: onnx.ModelProto, plan: StepPlan, T: int = 5, seed: int = 0, rtol: float = 1e-5) -> None:
    """Fail unless ``T`` steps of the step graph reproduce one ``T``-step run of ``model``."""
    rng = np.random.default_rng(seed)
    feeds = _zero_feeds(model, plan.states, T, rng)
    for name, _ in plan.frames:  # spikes, so that spiking layers take both branches
        feeds[name] = (rng.random(feeds[name].shape) < 0.3).astype(np.float32) * 2
    step_outs = [n for n, _ in plan.outputs]
    whole = _run_ort(model, feeds, step_outs + [s.final for s in plan.states if s.final])
    state = {s.input: (feeds[s.source].reshape(s.shape) if s.source in plan.sequence_inputs else s.initial)
             for s in plan.states}
    steps = {n: [] for n in step_outs}
    for t in range(T):
        f = {n: feeds[n][t:t + 1] for n, _ in plan.frames}
        got = _run_ort(plan.model, {**f, **state}, step_outs + [s.output for s in plan.states])
        for n in step_outs:
            steps[n].append(got[n])
        state = {s.input: got[s.output] for s in plan.states}
    for n in step_outs:
        a, b = np.concatenate(steps[n], axis=0), np.asarray(whole[n])
        if a.shape != b.shape or not np.allclose(a, b, rtol=rtol, atol=rtol * max(1.0, float(np.abs(b).max()))):
            raise CompileError(f"output '{n}' is not computed step by step: an op between the sequence ops "
                               f"mixes time steps, so this model cannot run one step at a time")
    for s in plan.states:
        if s.final and not np.allclose(state[s.input], np.asarray(whole[s.final]).reshape(s.shape), rtol=rtol):
            raise CompileError(f"final state '{s.final}' differs when the model runs step by step")
