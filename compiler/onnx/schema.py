"""The ``ai.lsnn`` operator set, version 1, as data (``shared/spec/ops.md``).

One table per op: its inputs (name, shape in symbols, required), outputs and
attributes. The validator, the function bodies, the exporter and every
lowering read these tables, so the op names and arities live in one place.
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
class OpSchema:
    name: str
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    attributes: dict  # name -> (type, default)

    def input_index(self, name: str) -> int:
        return [p.name for p in self.inputs].index(name)


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
)

LI = OpSchema(
    "LI",
    inputs=(
        Port("X", ("T", "B", "I")), Port("W", ("O", "I")), Port("alpha", ("O",)),
        Port("bias", ("O",), False), Port("initial_y", ("B", "O"), False),
    ),
    outputs=(Port("Y", ("T", "B", "O")), Port("final_y", ("B", "O"), False)),
    attributes={},
)

OPS = {op.name: op for op in (ALIF, LI)}
