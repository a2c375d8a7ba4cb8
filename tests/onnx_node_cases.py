"""ONNX's own node test cases as a differential test of the compiler, per target.

Each case of ``onnx.backend.test.case.node.collect_testcases`` whose op is one of the families
a target claims (:data:`TARGETS`: every one of :data:`FAMILIES` on cpu, the recurrent ops on
cortex-m4; expanded function bodies included) is compiled with
``lsnn.compiler.compile(model, target=...)`` and run on the case's inputs. Its outcome:

- ``pass``: every output has the expected shape and dtype and is within the case's tolerance
  (``rtol``/``atol`` of the case, by default 1e-3 and 1e-7, as ONNX's backend runner takes them);
- ``refused``: the compiler raised one of the project's errors (:class:`LsnnError`) naming the
  node, by name or, for an unnamed node, as ``node #k (ai.onnx::Op)``;
- ``wrong``: it ran, but an output differs (values, shape or dtype);
- ``crashed``: any other exception, at compile or at run time, or a refusal that names no node.

:file:`onnx_node_cases.json` says which outcome each case has on each target, and why for
each refusal; the test (:file:`test_onnx_node_cases.py`) holds every case to it, so that a new
failure or a new pass is noticed. To see the differences, or to rewrite a target's entries after
a change (the reasons of refusals that stay are kept; a new one is left for you to write)::

    .venv/bin/python tests/onnx_node_cases.py [--target cortex-m4]            # compare, print what differs
    .venv/bin/python tests/onnx_node_cases.py [--target cortex-m4] --write    # rewrite its entries
"""
from __future__ import annotations

import json
import re
import sys
import time
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

EXPECTED = Path(__file__).with_name("onnx_node_cases.json")
OUTCOMES = ("pass", "refused", "wrong", "crashed")

#: The op families the compiler claims on cpu: the ones a user's network wraps around its
#: recurrent layers, and the recurrent ops themselves.
FAMILIES = (
    # linear layers and convolutions
    "MatMul", "Gemm", "Conv", "ConvTranspose",
    # normalisation, activations, regularisers
    "LayerNormalization", "BatchNormalization", "Dropout", "Identity",
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Clip", "Elu", "Gelu", "Softplus",
    "HardSigmoid", "Exp", "Log", "Sqrt", "Neg", "Abs",
    # arithmetic
    "Add", "Sub", "Mul", "Div", "Pow", "Where",
    # shapes
    "Flatten", "Reshape", "Concat", "Split", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather",
    "Expand", "Pad",
    # reductions and pooling
    "ReduceMean", "ReduceSum", "ReduceMax", "MaxPool", "AveragePool", "GlobalAveragePool",
    # recurrent layers
    "LSTM", "GRU", "RNN",
)
RECURRENT = ("LSTM", "GRU", "RNN")
#: target -> the op families whose cases run on it
TARGETS = {"cpu": FAMILIES, "cortex-m4": RECURRENT}


@dataclass
class Outcome:
    kind: str  # one of OUTCOMES
    detail: str = ""  # the error message, or what differs

    def as_json(self):
        return self.kind if self.kind == "pass" else {"outcome": self.kind, "error": self.detail}


@lru_cache(maxsize=None)
def cases(target: str = "cpu") -> dict:
    """Case name -> (op family, case) for every case of the families ``target`` claims
    (:data:`TARGETS`), ordered by name. An expanded case (``..._expanded``) has its op's family:
    that of its unexpanded twin."""
    with warnings.catch_warnings():  # the case generators divide by zero on purpose
        warnings.simplefilter("ignore")
        from onnx.backend.test.case.node import collect_testcases

        collected = collect_testcases()
    family = {c.name: c.model.graph.node[0].op_type for c in collected if len(c.model.graph.node) == 1}
    chosen = {}
    for c in collected:
        op = family.get(re.sub(r"_expanded.*$", "", c.name))
        if op in TARGETS[target]:
            chosen[c.name] = op, c
    return dict(sorted(chosen.items()))


def node_labels(model) -> list[str]:
    """How the project's errors may name each node of ``model`` (``node 'name'`` or ``node #k``)
    and each graph input and output (``graph input 'name'``)."""
    g = model.graph
    return [f"node '{n.name}'" if n.name else f"node #{k} ({n.domain or 'ai.onnx'}::{n.op_type})"
            for k, n in enumerate(g.node)] + \
        [f"graph {what} '{vi.name}'" for what, values in (("input", g.input), ("output", g.output)) for vi in values]


def _compare(case, outputs: dict, expected: list) -> str:
    """What differs between ``outputs`` and the case's ``expected`` ones; "" when nothing does."""
    for vi, want in zip(case.model.graph.output, expected):
        got = np.asarray(outputs[vi.name])
        want = np.asarray(want)
        if got.shape != want.shape:
            return f"output '{vi.name}' has shape {list(got.shape)}, expected {list(want.shape)}"
        if got.dtype != want.dtype:
            return f"output '{vi.name}' is {got.dtype}, expected {want.dtype}"
        try:
            np.testing.assert_allclose(got, want, rtol=case.rtol, atol=case.atol)
        except AssertionError as e:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()]
            return f"output '{vi.name}': " + "; ".join(lines[1:4])
    return ""


def run_case(case, target: str = "cpu", **options) -> Outcome:
    """Compile ``case``'s model for ``target`` (with its ``options``) and run it on each of its data sets."""
    from lsnn.compiler import compile
    from lsnn.reference.errors import LsnnError

    try:
        artifact = compile(case.model, target=target, **options)
    except LsnnError as e:
        named = any(label in str(e) for label in node_labels(case.model))
        return Outcome("refused" if named else "crashed",
                       str(e) if named else f"refused without naming the node: {type(e).__name__}: {e}")
    except Exception as e:  # noqa: BLE001 - anything else is what the harness is for
        return Outcome("crashed", f"at compile time: {type(e).__name__}: {_first_line(e)}")
    names = [vi.name for vi in case.model.graph.input if vi.name not in {i.name for i in case.model.graph.initializer}]
    for inputs, expected in case.data_sets:
        try:
            outputs = artifact.run(dict(zip(names, inputs)))
        except Exception as e:  # noqa: BLE001
            return Outcome("crashed", f"at run time: {type(e).__name__}: {_first_line(e)}")
        diff = _compare(case, outputs, expected)
        if diff:
            return Outcome("wrong", diff)
    return Outcome("pass")


def _first_line(e: Exception) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def run_all(target: str = "cpu", names=None, progress=None) -> dict[str, Outcome]:
    chosen = cases(target)
    out = {}
    for name in names or chosen:
        started = time.perf_counter()
        out[name] = run_case(chosen[name][1], target)
        if progress:
            progress(f"{time.perf_counter() - started:6.2f}s {name}: {out[name].kind} {out[name].detail[:160]}")
    return out


def load_expected() -> dict:
    """The expected-result file: ``{"reasons": {key: why}, "targets": {target: {name: "pass" |
    {"outcome": "refused", "reason": key, "error": message}}}}``."""
    return json.loads(EXPECTED.read_text())


def entries(expected: dict, target: str = "cpu") -> dict:
    """The expected outcome of each case on ``target``."""
    return expected["targets"].get(target, {})


def expected_kind(entry) -> str:
    return entry if isinstance(entry, str) else entry["outcome"]


def differences(expected: dict, got: dict[str, Outcome], target: str = "cpu") -> list[str]:
    """One line for each case whose outcome or refusal message on ``target`` is not the expected one."""
    lines = []
    for name, outcome in got.items():
        entry = entries(expected, target).get(name)
        if entry is None:
            lines.append(f"{name}: {outcome.kind} ({outcome.detail}), not in {EXPECTED.name} for {target}")
        elif expected_kind(entry) != outcome.kind or (outcome.kind != "pass" and entry["error"] != outcome.detail):
            lines.append(f"{name}: expected {expected_kind(entry)}"
                         f"{'' if isinstance(entry, str) else ' (' + entry['error'] + ')'}, "
                         f"got {outcome.kind}{' (' + outcome.detail + ')' if outcome.detail else ''}")
    return lines


def write_expected(got: dict[str, Outcome], target: str = "cpu") -> None:
    """Rewrite ``target``'s entries of the expected-result file from ``got``: a refusal with the
    same message as before keeps its reason; any other non-pass gets the reason ``TODO``, which
    the test refuses."""
    from lsnn.reference.files import write_json

    old = load_expected() if EXPECTED.exists() else {"reasons": {}, "targets": {}}
    fresh = {}
    for name, outcome in got.items():
        before = entries(old, target).get(name)
        entry = outcome.as_json()
        if not isinstance(entry, str):
            same = isinstance(before, dict) and before["outcome"] == outcome.kind and before["error"] == outcome.detail
            entry["reason"] = before["reason"] if same else "TODO"
        fresh[name] = entry
    targets = {**old["targets"], target: fresh}
    used = {e["reason"] for es in targets.values() for e in es.values() if isinstance(e, dict)}
    reasons = {k: v for k, v in old["reasons"].items() if k in used}
    write_json(EXPECTED, {"reasons": reasons, "targets": dict(sorted(targets.items()))})


def main(argv: list[str]) -> int:
    target = argv[argv.index("--target") + 1] if "--target" in argv else "cpu"
    got = run_all(target, progress=lambda line: print(line, flush=True))
    counts = {}
    for name, outcome in got.items():
        family = counts.setdefault(cases(target)[name][0], dict.fromkeys(OUTCOMES, 0))
        family[outcome.kind] += 1
    for family, c in sorted(counts.items()):
        print(f"{family:20s} " + " ".join(f"{k} {v:3d}" for k, v in c.items()))
    if "--write" in argv:
        write_expected(got, target)
        print(f"wrote {target}'s entries of {EXPECTED}")
        return 0
    diff = differences(load_expected(), got, target) if EXPECTED.exists() else ["no expected-result file"]
    print("\n".join(diff) or f"every case as {EXPECTED.name} says")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
