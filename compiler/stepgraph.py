"""A model as one time step: ``(frame, state) -> (outputs, next state)``.

Targets without a sequence runtime (Cortex-M) run a model one step at a time
and keep the state of every sequence op (ALIF, LI, LSTM) in static memory.
:func:`step_graph` rewrites the graph so: each sequence op's initial-state
inputs become graph inputs and its final-state outputs graph outputs; every
other input and output keeps its time axis, of length 1. The rest of the graph
must be step-wise: each op treats time steps (and sequences) on its own, as
linear, convolutional and normalising layers between the sequence ops do.

Every tensor computed from the inputs' data (a *sequence tensor*) must hold the
T steps and B sequences in its leading axes, T outer (``[T, B, ...]``,
``[T*B, ...]``, axes of 1 among them); :func:`step_graph` finds them in one run
of the original under onnxruntime, refuses the first node whose output breaks
that (a reduction over time, a transpose of T), and gives each ``Reshape`` of a
sequence tensor its one-step shape (a static export writes ``[T*B, 1, n]`` and
``[T, B, -1]`` as constants). :func:`check_steps` then runs T single steps
against one T-step run and names the first node whose outputs differ (a cumsum
or a softmax over time keeps the shape but mixes steps).

Each refusal for how the model treats time is a :class:`NotStepwise`: Cortex-M then runs the
model whole, one call per run, where its shapes are fixed and it fits the RAM
(:mod:`.wholegraph`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

from lsnn.compiler.onnx.schema import sequence_op

from .importer import CompileError, node_label

#: time steps and sequences the probe and the check run where the model leaves T or B open
#: (two sizes that differ, so that a tensor's axes tell T from B); sequences it checks at most
CHECK_STEPS = 5
CHECK_SEQUENCES = 2
WHY_STEPWISE = ("Cortex-M runs a model one time step at a time, so every op outside the sequence ops "
                "(ALIF, LI, LSTM) must treat each step of each sequence on its own")
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")


class NotStepwise(CompileError):
    """The model cannot run one time step at a time only because of how it treats time (a node that
    walks time backwards, stops sequences at their own lengths, takes its weights at run time or
    mixes steps): it may still run whole, all its sequences in one call, where that fits the target."""


@dataclass
class State:
    """One state tensor of one sequence op, carried from step to step."""
    node: str
    name: str            # the schema's state slot: v, a, z, r, y, h or c
    input: str           # its input in the step graph
    output: str          # its next value, an output of the step graph
    shape: list          # static shape in the step graph (batch 1)
    source: str          # the original graph's initial-state tensor ("" when omitted)
    batch_axis: int = 0  # the axis of B in the original's state tensors ([B, H]; LSTM [D, B, H])
    initial: np.ndarray | None = None  # [rows, size]: its value when the original sets it without an
    #                                    input (zeros, an initializer, a computation): one row for every
    #                                    sequence, or one per sequence of a fixed batch
    final: str = ""      # the original graph output that is its final value ("" if none)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def sequence(self, value: np.ndarray, b: int) -> np.ndarray:
        """Sequence ``b``'s part of a state tensor of the original graph, in the step graph's shape."""
        return np.take(np.asarray(value, np.float32), [b], axis=self.batch_axis).reshape(self.shape)

    def initial_of(self, b: int) -> np.ndarray:
        """Sequence ``b``'s initial value (zeros where an input of the original sets it)."""
        if self.initial is None:
            return np.zeros(self.shape, np.float32)
        return self.initial[b if len(self.initial) > 1 else 0].reshape(self.shape)

    def batched(self, B: int) -> list:
        """Its shape in the original graph for ``B`` sequences."""
        shape = list(self.shape)
        shape[self.batch_axis] = B
        return shape


@dataclass
class StepPlan:
    model: onnx.ModelProto                               # the step graph
    frames: list = field(default_factory=list)           # [(name, shape)] per-step inputs, time axis 1
    outputs: list = field(default_factory=list)          # [(name, shape)] per-step outputs, time axis 1
    states: list = field(default_factory=list)           # [State]
    sequence_inputs: list = field(default_factory=list)  # original inputs that only set a state
    steps: int | None = None                             # T, where the original's inputs fix it
    batch: int | None = None                             # B, where the original's inputs fix it
    sequence: dict = field(default_factory=dict)         # sequence tensor -> its shape at one step
    nodes: list = field(default_factory=list)            # [(node label, [sequence outputs])] in graph order
    #: how the artifact cuts inputs into the firmware's frames (:mod:`lsnn.targets.cortex_m.artifact`)
    runs = "step"
    #: what one call of the firmware runs (its header says so)
    call = ("The model runs one time step per call; its state (membrane potentials,\n * adaptation, refractory "
            "counters, readout and LSTM state) stays in static RAM.")

    def check(self, model: onnx.ModelProto) -> None:
        """Fail unless the step graph, step by step, computes what ``model`` does (:func:`check_steps`)
        and each output is one frame per step."""
        check_steps(model, self)
        for name, shape in self.outputs:
            if shape[:2] != [1, 1]:
                raise NotStepwise(f"output '{name}' has step shape {shape}; a per-step output must be [T, B, ...]")

    def check_fits(self, layout: dict, workspace: int, target) -> None:
        """Nothing to check: one step's buffers are small, and the linker names what overflows."""

    @property
    def probe_sizes(self) -> tuple[int, int]:
        """T and B of the runs that probe the original: its own, or two different sizes."""
        return self.steps or CHECK_STEPS, self.batch or CHECK_SEQUENCES

    def initial_state(self, b: int = 0) -> np.ndarray:
        """All states of sequence ``b``, concatenated: the values the original sets, zeros where a
        graph input sets them."""
        parts = [s.initial_of(b).ravel() for s in self.states]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)

    def initial_rows(self) -> int:
        """How many sequences have initial states of their own: 1, or the fixed batch."""
        return max([len(s.initial) for s in self.states if s.initial is not None], default=1)


def _dims(vi) -> list:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]


#: what a step-by-step run cannot take of ONNX's recurrent ops: each needs the whole sequence
#: (a backwards walk, per-sequence lengths) or another memory layout of it
_WHOLE_SEQUENCE = ("a step-by-step run (Cortex-M's firmware: one time step per call) never holds the whole "
                   "sequence")


def _check_stepwise(node, schema, index: int) -> None:
    """Refuse, naming the node, an ONNX recurrent node that cannot run one step at a time."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    direction = attrs.get("direction", b"forward")
    problem = (f"direction={direction.decode()}" if direction != b"forward" else
               "layout=1 (batch first)" if attrs.get("layout", 0) else
               "a sequence_lens input" if schema.bind(list(node.input))["sequence_lens"] else None)
    if problem:
        raise NotStepwise(f"{node_label(node, index)}: {problem} is not supported: {_WHOLE_SEQUENCE}")


def _state_shape(node, schema, inits: dict, index: int) -> list:
    """The shape of one step's state of each slot: ``[1, B=1, H]`` for ONNX's recurrent ops
    (``[D, B, H]``, one direction), ``[B=1, H]`` for the ``ai.lsnn`` ops."""
    weight = "R" if schema.domain == "" else "W"
    w = inits.get(node.input[schema.input_index(weight)])
    if w is None:
        raise NotStepwise(f"{node_label(node, index)}: {weight} must be an initializer to run step by step")
    if schema.domain == "":
        _check_stepwise(node, schema, index)
        return [1, 1, int(w.dims[2])]
    return [1, int(w.dims[0])]


def _label(node, i: int, taken: set) -> str:
    """A name for the node's state tensors: its name in ``[A-Za-z0-9_]``, unique in the graph."""
    label = _NOT_IDENTIFIER.sub("_", node.name or f"{node.op_type.lower()}_{i}")
    if label in taken:
        label = f"{label}_{i}"
    taken.add(label)
    return label


def _cut_states(node, schema, label: str, index: int, inits: dict, graph_outputs: list) -> list[State]:
    """Turn the node's state slots (the schema's) into step-graph inputs and outputs."""
    slots = schema.state_indices()
    while len(node.input) <= max(i for i, _ in slots):
        node.input.append("")
    while len(node.output) <= max(o for _, o in slots):
        node.output.append("")
    shape = _state_shape(node, schema, inits, index)
    states = []
    for slot, (si, so) in zip(schema.states, slots):
        source = node.input[si]
        final = node.output[so] if node.output[so] in graph_outputs else ""
        node.input[si] = f"{label}_state_{slot.name}"
        if not node.output[so]:
            node.output[so] = f"{label}_next_{slot.name}"
        states.append(State(label, slot.name, node.input[si], node.output[so], shape, source,
                            batch_axis=schema.inputs[si].shape.index("B"), final=final))
    return states


def _frames(graph_inputs: list, seq_inputs: list) -> list:
    frames = []
    for vi in graph_inputs:
        if vi.name in seq_inputs:
            continue
        dims = _dims(vi)
        if len(dims) < 2 or any(not isinstance(d, int) or d < 1 for d in dims[2:]):
            raise CompileError(f"input '{vi.name}' must be [T, B, ...] with fixed trailing dimensions "
                               f"to run step by step (it is {dims})")
        frames.append((vi.name, [1, 1, *dims[2:]]))
    return frames


def _fixed(what: str, sizes: dict) -> int | None:
    """The one size the inputs fix for ``what`` (T or B), None where they leave it open."""
    values = set(sizes.values())
    if len(values) > 1:
        raise CompileError(f"the inputs disagree on {what}: {sizes}")
    if values and min(values) < 1:
        raise CompileError(f"input '{next(iter(sizes))}' fixes {what} = 0; every dimension must be at least 1")
    return values.pop() if values else None


def _fixed_sizes(model: onnx.ModelProto, plan: StepPlan) -> None:
    """The T and B that the original's inputs fix (``torch.onnx.export`` writes them fixed)."""
    dims = {vi.name: _dims(vi) for vi in model.graph.input} | {t.name: list(t.dims) for t in model.graph.initializer}
    steps = {n: dims[n][0] for n, _ in plan.frames if isinstance(dims[n][0], int)}
    batch = {n: dims[n][1] for n, _ in plan.frames if isinstance(dims[n][1], int)}
    for s in plan.states:  # initial states given as inputs or initializers
        d = dims.get(s.source, [])
        if len(d) > s.batch_axis and isinstance(d[s.batch_axis], int):
            batch[s.source] = d[s.batch_axis]
    plan.steps, plan.batch = _fixed("T", steps), _fixed("B", batch)


def _extract(m: onnx.ModelProto, frames: list, states: list, step_outputs: list) -> onnx.ModelProto:
    """The graph between the frames and states and the step outputs and next states; declared
    shapes of the original's other tensors (with its T and B) are dropped."""
    from onnx.utils import Extractor

    for s in states:
        m.graph.input.append(helper.make_tensor_value_info(s.input, TensorProto.FLOAT, s.shape))
        m.graph.output.append(helper.make_tensor_value_info(s.output, TensorProto.FLOAT, s.shape))
    in_names = [n for n, _ in frames] + [s.input for s in states]
    out_names = list(dict.fromkeys(step_outputs + [s.output for s in states]))
    try:
        step = Extractor(m).extract_model(in_names, out_names)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, KeyError, ValueError) as e:
        raise CompileError(f"cannot cut the graph into one time step: {e}") from e
    if not step.functions:
        step.functions.extend(m.functions)
    if not step.metadata_props:
        step.metadata_props.extend(m.metadata_props)
    del step.graph.input[:]
    step.graph.input.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in frames] +
                            [helper.make_tensor_value_info(s.input, TensorProto.FLOAT, s.shape) for s in states])
    del step.graph.value_info[:]
    for o in step.graph.output:
        if o.name in step_outputs:
            o.type.tensor_type.ClearField("shape")
    return step


def step_graph(model: onnx.ModelProto) -> StepPlan:
    """The one-step form of ``model`` (batch 1) and how its tensors map to the original."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    graph_inputs = [vi for vi in g.input if vi.name not in inits]
    orig_outputs = [o.name for o in g.output]
    states: list[State] = []
    labels: set = set()
    for i, node in enumerate(g.node):
        schema = sequence_op(node)
        if schema is not None:
            states += _cut_states(node, schema, _label(node, i, labels), i, inits, orig_outputs)
    finals = {s.final for s in states if s.final}
    consumers = {n for node in g.node for n in node.input}
    sources = {s.source for s in states}
    seq_inputs = [vi.name for vi in graph_inputs if vi.name in sources and vi.name not in consumers]
    frames = _frames(graph_inputs, seq_inputs)
    step_outputs = [n for n in orig_outputs if n not in finals]
    plan = StepPlan(None, frames, [], states, seq_inputs)
    _fixed_sizes(model, plan)
    _time_axes(model, plan)
    _step_reshapes(m, plan)
    plan.model = _extract(m, frames, states, step_outputs)
    _initial_values(model, plan)
    plan.outputs = _output_shapes(plan, step_outputs)
    return plan


def _ort(model: onnx.ModelProto):
    from lsnn.targets import open_runtime

    return open_runtime(model, "ort", threads=1)


def _node_label(node) -> str:
    return f"node '{node.name or node.output[0]}' ({node.op_type})"


def _sequence_outputs(node, sequence: set) -> list[str]:
    """The outputs of ``node`` that are sequence tensors, given the sequence tensors before it:
    every output of an op that reads one (a sequence op: its ``[T, ...]`` outputs, not its final
    states; ``Shape`` and ``Size``: none, they read the shape only)."""
    if node.op_type in ("Shape", "Size") or not any(i in sequence for i in node.input):
        return []
    schema = sequence_op(node)
    ports = schema.outputs if schema is not None else [None] * len(node.output)
    return [o for o, port in zip(node.output, ports) if o and (port is None or port.shape[0] == "T")]


def _with_outputs(model: onnx.ModelProto, names: list) -> onnx.ModelProto:
    """``model`` with ``names`` among its graph outputs (their types from shape inference)."""
    from lsnn.compiler.onnx.functions import attach

    out = onnx.ModelProto()
    out.CopyFrom(model)
    have = {o.name for o in out.graph.output}
    try:
        known = {vi.name: vi.type.tensor_type.elem_type
                 for vi in onnx.shape_inference.infer_shapes(attach(model)).graph.value_info}
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError):
        known = {}
    out.graph.output.extend(helper.make_tensor_value_info(n, known.get(n) or TensorProto.FLOAT, None)
                            for n in names if n not in have)
    return out


def _leading_axes(shape: tuple, T: int, B: int) -> int | None:
    """How many leading axes of ``shape`` hold T steps and B sequences, T outer (``[T, B, ...]``,
    ``[T*B, ...]``, with axes of 1 anywhere among them); None where they do not."""
    size = 1
    for k, d in enumerate(shape):
        size *= d
        if size == T * B:
            big = [n for n in shape[:k + 1] if n != 1]
            return k + 1 if big in ([n for n in (T, B) if n != 1], [T * B]) else None
        if size > T * B or size == 0:
            return None
    return None


def _time_axes(model: onnx.ModelProto, plan: StepPlan) -> None:
    """Each sequence tensor's shape at one step of one sequence (``plan.sequence``: 1 for each
    leading axis that holds T and B), from one run of the original; the first node whose output
    does not keep T and B as its leading axes is refused by name."""
    T, B = plan.probe_sizes
    sequence = {n for n, _ in plan.frames}
    for node in model.graph.node:
        outs = _sequence_outputs(node, sequence)
        sequence.update(outs)
        if outs:
            plan.nodes.append((_node_label(node), outs))
    names = [o for _, outs in plan.nodes for o in outs]
    values = _ort(_with_outputs(model, names)).run(_feeds(model, plan, T, B, np.random.default_rng(0)), names) \
        if names else {}
    plan.sequence = {n: shape for n, shape in plan.frames}
    for label, outs in plan.nodes:
        for o in outs:
            shape = np.shape(values[o])
            k = _leading_axes(shape, T, B)
            if k is None:
                raise NotStepwise(f"{label} mixes time steps: its output '{o}' has shape {list(shape)} when "
                                   f"the input has T = {T} steps of B = {B} sequences, which are not its "
                                   f"leading axes ([T, B, ...] or [T*B, ...]); {WHY_STEPWISE}")
            plan.sequence[o] = [1] * k + list(shape[k:])


def _step_reshapes(m: onnx.ModelProto, plan: StepPlan) -> None:
    """Give every ``Reshape`` of a sequence tensor its shape at one step of one sequence (a static
    export's constant ``[T*B, 1, n]`` would not fit one step)."""
    for node in m.graph.node:
        if node.op_type == "Reshape" and node.output[0] in plan.sequence:
            name = f"{node.output[0]}_step_shape"
            m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(plan.sequence[node.output[0]],
                                                                             np.int64), name))
            node.input[1] = name


def _initial_values(model: onnx.ModelProto, plan: StepPlan) -> None:
    """The value of each initial state the original graph sets itself (usually zeros): one row, or
    one per sequence where it sets them for a fixed batch."""
    graph_inputs = {vi.name for vi in model.graph.input} - {t.name for t in model.graph.initializer}
    computed = [s for s in plan.states if s.source and s.source not in graph_inputs]
    for s in plan.states:
        if not s.source:
            s.initial = np.zeros((1, s.size), np.float32)
    if not computed:
        return
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(s.source, TensorProto.FLOAT, None)
                              for s in computed if s.source not in have)
    feeds = _feeds(model, plan, plan.steps or 1, plan.batch or 1)
    values = _ort(probe).run(feeds, [s.source for s in computed])
    for s in computed:
        rows = np.moveaxis(np.asarray(values[s.source], np.float32), s.batch_axis, 0)
        s.initial = rows.reshape(len(rows), s.size)


def _feeds(model: onnx.ModelProto, plan: StepPlan, T: int, B: int, rng=None) -> dict:
    """Inputs of the original for ``B`` sequences: ``[T, B, ...]`` frames (spikes, so that spiking
    layers take both branches; zeros without ``rng``) and initial states (normal; zeros)."""
    feeds = {}
    for name, shape in plan.frames:
        size = [T, B, *shape[2:]]
        feeds[name] = ((rng.random(size) < 0.3) * 2 if rng is not None else np.zeros(size)).astype(np.float32)
    for s in plan.states:
        if s.source in plan.sequence_inputs:
            size = s.batched(B)
            feeds[s.source] = (rng.normal(0, 1, size) if rng is not None else np.zeros(size)).astype(np.float32)
    return feeds


def _output_shapes(plan: StepPlan, names: list) -> list:
    feeds = {n: np.zeros(s, np.float32) for n, s in plan.frames}
    feeds.update({s.input: np.zeros(s.shape, np.float32) for s in plan.states})
    got = _ort(plan.model).run(feeds, names)
    return [(n, list(np.asarray(got[n]).shape)) for n in names]


def _step_by_step(step_rt, plan: StepPlan, feeds: dict, b: int, T: int, names: list) -> tuple[dict, dict]:
    """Sequence ``b`` of ``feeds`` run one step at a time: the tensors ``names`` at each step
    (a list of T) and the last state."""
    state = {s.input: s.sequence(feeds[s.source], b) if s.source in plan.sequence_inputs else s.initial_of(b)
             for s in plan.states}
    steps = {n: [] for n in names}
    for t in range(T):
        f = {n: feeds[n][t:t + 1, b:b + 1] for n, _ in plan.frames}
        got = step_rt.run({**f, **state}, names + [s.output for s in plan.states])
        for n in names:
            steps[n].append(np.asarray(got[n]))
        state = {s.input: got[s.output] for s in plan.states}
    return steps, state


def _close(a: np.ndarray, w: np.ndarray, rtol: float) -> bool:
    a, w = np.asarray(a, np.float64), np.asarray(w, np.float64)  # a comparison's bool too
    return a.shape == w.shape and np.allclose(a, w, rtol=rtol, atol=rtol * max(1.0, float(np.abs(w).max(initial=0))))


def _first_difference(plan: StepPlan, steps: dict, whole: dict, b: int, rtol: float) -> str | None:
    """What the first node whose outputs differ step by step does wrong, None when none does."""
    T, B = plan.probe_sizes
    for label, outs in plan.nodes:
        for o in outs:
            if o not in steps:  # not on the way to an output: not in the step graph
                continue
            want = plan.sequence[o]
            for t, got in enumerate(steps[o]):
                if list(got.shape) != want:
                    return (f"{label} mixes time steps: its output '{o}' has shape {list(got.shape)} at one step, "
                            f"not {want}; {WHY_STEPWISE}")
                if not _close(got.reshape(-1), np.asarray(whole[o]).reshape(T, B, -1)[t, b], rtol):
                    return (f"{label} mixes time steps: its output '{o}' is not computed step by step "
                            f"(it differs at step {t} of sequence {b}); {WHY_STEPWISE}")
    return None


def check_steps(model: onnx.ModelProto, plan: StepPlan, seed: int = 0, rtol: float = 1e-5) -> None:
    """Fail unless the step graph, step by step, reproduces one run of ``model`` (T steps of up to
    :data:`CHECK_SEQUENCES` sequences, :attr:`StepPlan.probe_sizes`), naming the first node whose
    outputs differ."""
    T, B = plan.probe_sizes
    feeds = _feeds(model, plan, T, B, np.random.default_rng(seed))
    inside = {o for node in plan.model.graph.node for o in node.output}
    names = [o for _, outs in plan.nodes for o in outs if o in inside]
    step_outs = [n for n, _ in plan.outputs]
    finals = [s.final for s in plan.states if s.final]
    whole = _ort(_with_outputs(model, names)).run(feeds, list(dict.fromkeys(names + step_outs + finals)))
    step_rt = _ort(_with_outputs(plan.model, names))
    for b in range(min(B, CHECK_SEQUENCES)):
        steps, state = _step_by_step(step_rt, plan, feeds, b, T, list(dict.fromkeys(names + step_outs)))
        wrong = _first_difference(plan, steps, whole, b, rtol)
        if wrong:
            raise NotStepwise(wrong)
        for n in step_outs:
            if not _close(np.concatenate(steps[n], axis=0), np.asarray(whole[n])[:, b:b + 1], rtol):
                raise NotStepwise(f"output '{n}' is not computed step by step: an op between the sequence ops "
                                   f"mixes time steps; {WHY_STEPWISE}")
        for s in plan.states:
            if s.final and not np.allclose(state[s.input], s.sequence(whole[s.final], b), rtol=rtol):
                raise NotStepwise(f"final state '{s.final}' differs when the model runs step by step")
