"""The ``ai.lsnn`` operator set, version 1, as data (``shared/spec/ops.md``).

One table per op: its inputs (name, shape in symbols, required), outputs,
attributes and state slots (which ``initial_*`` input a ``final_*`` output
continues). The validator, the function bodies, the exporter, the importer,
the step graph and the runtimes read these tables, so the op names, arities,
defaults and state pairs live in one place. ONNX's own ``LSTM``, ``GRU`` and
``RNN`` are described here too (sequence ops with state), so that the places
which treat every sequence op alike read one table.
"""
from __future__ import annotations

from dataclasses import dataclass

DOMAIN = "ai.lsnn"
VERSION = 1
ONNX_OPSET = 18  # standard opset used by the exporter and the function bodies


@dataclass(frozen=True)
class Port:
    name: str
    shape: tuple[str, ...]  # symbols: T, B, I, H, O
    required: bool = True


@dataclass(frozen=True)
class StateSlot:
    """One piece of recurrent state: the input that sets it and the output that continues it."""
    name: str    # v, a, z, r; y; h, c
    input: str   # e.g. initial_v
    output: str  # e.g. final_v


@dataclass(frozen=True)
class OpSchema:
    name: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    attributes: dict  # name -> (type, default)
    states: tuple[StateSlot, ...] = ()
    domain: str = DOMAIN

    def input_index(self, name: str) -> int:
        return [p.name for p in self.inputs].index(name)

    def output_index(self, name: str) -> int:
        return [p.name for p in self.outputs].index(name)

    def state_indices(self) -> list[tuple[int, int]]:
        """(input index, output index) of each state slot, in order."""
        return [(self.input_index(s.input), self.output_index(s.output)) for s in self.states]

    def bind(self, values) -> dict:
        """A node's inputs (positional, None or missing where omitted) by input name."""
        values = list(values)
        return {p.name: values[k] if k < len(values) else None for k, p in enumerate(self.inputs)}

    def attribute_values(self, given: dict) -> dict:
        """Every attribute, ``given`` where present (None counts as absent), else its default."""
        return {name: given[name] if given.get(name) is not None else default
                for name, (_, default) in self.attributes.items()}


ALIF = OpSchema(
    "ALIF",
    inputs=(
        Port("X", ("T", "B", "I")), Port("W", ("H", "I")), Port("R", ("H", "H")),
        Port("beta", ("H",)), Port("alpha", ("H",)), Port("rho", ("H",)),
        Port("initial_v", ("B", "H"), False), Port("initial_a", ("B", "H"), False),
        Port("initial_z", ("B", "H"), False), Port("initial_r", ("B", "H"), False),
    ),
    outputs=(
        Port("Z", ("T", "B", "H")), Port("V", ("T", "B", "H"), False), Port("A", ("T", "B", "H"), False),
        Port("final_v", ("B", "H"), False), Port("final_a", ("B", "H"), False),
        Port("final_z", ("B", "H"), False), Port("final_r", ("B", "H"), False),
    ),
    attributes={"thr": ("float", 0.01), "n_refractory": ("int", 0)},
    states=(StateSlot("v", "initial_v", "final_v"), StateSlot("a", "initial_a", "final_a"),
            StateSlot("z", "initial_z", "final_z"), StateSlot("r", "initial_r", "final_r")),
)

LI = OpSchema(
    "LI",
    inputs=(
        Port("X", ("T", "B", "I")), Port("W", ("O", "I")), Port("alpha", ("O",)),
        Port("bias", ("O",), False), Port("initial_y", ("B", "O"), False),
    ),
    outputs=(Port("Y", ("T", "B", "O")), Port("final_y", ("B", "O"), False)),
    attributes={},
    states=(StateSlot("y", "initial_y", "final_y"),),
)

OPS = {op.name: op for op in (ALIF, LI)}

#: ONNX's recurrent ops (opset 14+): D directions, G = gates x H; every input and attribute of
#: the standard, with its default (None: none; hidden_size is read from R)
_RECURRENT_ATTRIBUTES = {"activation_alpha": ("floats", None), "activation_beta": ("floats", None),
                         "activations": ("strings", None), "clip": ("float", None),
                         "direction": ("string", "forward"), "hidden_size": ("int", None), "layout": ("int", 0)}


def _recurrent(name: str, cell_state: bool, extra: dict) -> OpSchema:
    inputs = (Port("X", ("T", "B", "I")), Port("W", ("D", "G", "I")), Port("R", ("D", "G", "H")),
              Port("B", ("D", "G2"), False), Port("sequence_lens", ("B",), False),
              Port("initial_h", ("D", "B", "H"), False))
    outputs = (Port("Y", ("T", "D", "B", "H"), False), Port("Y_h", ("D", "B", "H"), False))
    states = (StateSlot("h", "initial_h", "Y_h"),)
    if cell_state:
        inputs += (Port("initial_c", ("D", "B", "H"), False), Port("P", ("D", "G3"), False))
        outputs += (Port("Y_c", ("D", "B", "H"), False),)
        states += (StateSlot("c", "initial_c", "Y_c"),)
    return OpSchema(name, inputs=inputs, outputs=outputs, attributes={**_RECURRENT_ATTRIBUTES, **extra},
                    states=states, domain="")


LSTM = _recurrent("LSTM", True, {"input_forget": ("int", 0)})
GRU = _recurrent("GRU", False, {"linear_before_reset": ("int", 0)})
RNN = _recurrent("RNN", False, {})
#: ONNX's recurrent ops by name
RECURRENT = {op.name: op for op in (LSTM, GRU, RNN)}

ONNX_DOMAINS = ("", "ai.onnx")  # both name ONNX's standard domain


def sequence_op(node) -> OpSchema | None:
    """The schema of a sequence op (``ai.lsnn`` ALIF or LI, ONNX LSTM, GRU or RNN), None for any other node."""
    if node.domain == DOMAIN:
        return OPS.get(node.op_type)
    if node.domain in ONNX_DOMAINS:
        return RECURRENT.get(node.op_type)
    return None
