"""Verify a model against the user's own PyTorch module (``lsnn.compiler.verify``, ``lsnn verify --module``).

The module is any network of :class:`lsnn.reference.ALIF` / ``LI`` layers and
PyTorch modules, as :func:`lsnn.compiler.export` exports it. The model under
test is an ONNX file (run by a runtime, or compiled for a target), a compiled
artifact, or a target name (the module is then exported and compiled for it).
Both run on the same inputs and are compared by the parity definition of
:mod:`lsnn.targets.parity`, per ALIF layer: each ``ai.lsnn::ALIF`` node is named
after its layer's module path, whose spikes (and ``V``, ``A``) a forward hook
takes (:class:`lsnn.targets.verify.LayerReference`); the module's outputs are
the model's outputs in order. There is no task: the readout's prediction
agreement is that of its argmax over the last axis, at every step.
"""
from __future__ import annotations

import importlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from lsnn.reference.errors import ConfigError

from .parity import MARGIN, RTOL, Probe, add_probes, compare, probe_name
from .runtime import Runtime
from .verify import LayerReference, dataset_entry, format_report, graph_inputs

RANDOM_SIZES = (100, 2)  # T and B of random inputs where the model leaves them free
RANDOM_SEED = 0


@dataclass(frozen=True)
class Report:
    """What :func:`verify` found: ``passed``, and ``data`` (JSON-able); ``str()`` is the text
    ``lsnn verify`` prints."""

    data: dict

    @property
    def passed(self) -> bool:
        return self.data["passed"]

    def __str__(self) -> str:
        return format_report(self.data)


@dataclass
class UnderTest:
    """The model verify runs: its runtime, its inputs (with their declared shapes) and outputs as
    written, and the probes of the ALIF nodes it exposes."""

    label: str
    runtime: Runtime
    runtime_name: str
    shapes: dict  # input name -> declared shape (sizes and symbols), None where undeclared
    outputs: list[str]
    probes: list[Probe]
    notes: list[str] = field(default_factory=list)


# -- the inputs ----------------------------------------------------------------------------------

def _array(x) -> np.ndarray:
    import torch

    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def given_feeds(names: list[str], inputs) -> dict[str, np.ndarray]:
    """``inputs`` (one array for a model of one input, or arrays named as its inputs) by input name."""
    if not isinstance(inputs, dict):
        if len(names) != 1:
            raise ConfigError(f"the model takes {len(names)} inputs ({', '.join(names)}): give a dict of arrays "
                              f"named so")
        return {names[0]: _array(inputs)}
    unknown, missing = sorted(set(inputs) - set(names)), [n for n in names if n not in inputs]
    if unknown or missing:
        raise ConfigError(f"inputs {sorted(inputs)} do not match the model's inputs ({', '.join(names)})"
                          + (f": no '{missing[0]}'" if missing else f": unknown '{unknown[0]}'"))
    return {n: _array(inputs[n]) for n in names}


def random_feeds(shapes: dict) -> dict[str, np.ndarray]:
    """Random currents N(0, 1) of each input's declared shape, a free dims 0 and 1 (time and
    batch) of :data:`RANDOM_SIZES`."""
    rng = np.random.default_rng(RANDOM_SEED)
    sizes: dict = {}
    feeds = {}
    for name, shape in shapes.items():
        if shape is None:
            raise ConfigError(f"input '{name}' declares no shape: give inputs to verify on")
        dims = []
        for k, d in enumerate(shape):
            if isinstance(d, str) and k >= len(RANDOM_SIZES):
                raise ConfigError(f"input '{name}' has shape {shape}: its axis {k} ('{d}') has no size; give "
                                  f"inputs to verify on")
            dims.append(sizes.setdefault(d, RANDOM_SIZES[k]) if isinstance(d, str) else d)
        feeds[name] = rng.normal(0.0, 1.0, dims).astype(np.float32)
    return feeds


def _describe(feeds: dict, given: bool) -> str:
    shapes = ", ".join(f"{n} {list(v.shape)}" for n, v in feeds.items())
    return shapes + ("" if given else " (random currents N(0, 1): no inputs given)")


# -- the model under test ------------------------------------------------------------------------

def _onnx(proto: onnx.ModelProto, label: str, runtime: str, inputs, threads: int) -> UnderTest:
    from lsnn.compiler.onnx.validate import check_feeds, declared_shape
    from lsnn.targets import open_runtime

    names = graph_inputs(proto)
    shapes = {vi.name: declared_shape(vi) for vi in proto.graph.input if vi.name in names}
    if inputs is not None:
        check_feeds(proto, given_feeds(list(shapes), inputs))  # before a compile
    probed, probes = add_probes(proto)
    return UnderTest(label, open_runtime(probed, runtime, threads), runtime, shapes,
                     [o.name for o in proto.graph.output], probes)


def _export(module, inputs, names: list[str] | None, dynamic: bool) -> onnx.ModelProto:
    """The module's export on ``inputs`` (by ``names``, else the one array), inputs named so."""
    import torch

    from lsnn.compiler.exporter import export

    if names is None:
        return export(module, torch.from_numpy(_array(inputs)), dynamic=dynamic)
    feeds = given_feeds(names, inputs)
    return export(module, tuple(torch.from_numpy(feeds[n]) for n in names), input_names=names, dynamic=dynamic)


def _artifact(art, label: str, module, inputs, dynamic: bool) -> UnderTest:
    """A compiled artifact: its outputs, and per ALIF layer where it exposes the layer's probes
    (compiled from ``add_probes(model)``): their names are those of the module's export."""
    from lsnn.reference import ALIF

    shapes = {i["name"]: i["shape"] for i in art.manifest["inputs"]}
    layers = [n for n, m in module.named_modules() if isinstance(m, ALIF)]
    if any(probe_name(n, "V") in art.outputs for n in layers):
        example = random_feeds(shapes) if inputs is None else inputs
        proto = _export(module, example, list(art.inputs), dynamic)
        probes = [p for p in add_probes(proto)[1] if {p.Z, p.V, p.A} <= set(art.outputs)]
        return UnderTest(label, art, art.target, shapes, [o.name for o in proto.graph.output], probes)
    note = ("the artifact exposes no ALIF layer's spikes (compiled without lsnn.targets.parity.add_probes): "
            "its outputs are compared at every step; give the target's name to compare per layer")
    return UnderTest(label, art, art.target, shapes, list(art.outputs), [], [note] if layers else [])


def _target_names() -> tuple:
    from lsnn.targets import RUNTIMES
    from lsnn.targets.base import available

    return RUNTIMES + tuple(available())


def _under_test(module, model, inputs, runtime: str, threads: int, dynamic: bool) -> UnderTest:
    from lsnn.compiler.onnx.validate import load as load_onnx
    from lsnn.reference.errors import MissingFileError
    from lsnn.targets import load
    from lsnn.targets.artifact import Artifact

    if isinstance(model, Artifact):
        return _artifact(model, f"the {model.target} artifact given", module, inputs, dynamic)
    if isinstance(model, onnx.ModelProto):
        return _onnx(model, "<in memory>", runtime, inputs, threads)
    if not isinstance(model, (str, Path)):
        raise ConfigError(f"model: expected an ONNX file or ModelProto, a compiled artifact (or its folder) or a "
                          f"target name ({', '.join(_target_names())}), got {type(model).__name__}")
    if Path(model).is_dir():
        return _artifact(load(model), str(model), module, inputs, dynamic)
    if Path(model).exists():
        return _onnx(load_onnx(model), str(model), runtime, inputs, threads)
    if str(model) not in _target_names():
        raise MissingFileError(f"model file not found: {model} (nor is it a target: {', '.join(_target_names())})")
    if inputs is None:
        raise ConfigError(f"give inputs to verify on: the module is exported for '{model}' with them")
    proto = _export(module, inputs, list(inputs) if isinstance(inputs, dict) else None, dynamic)
    label = f"the export of the {type(module).__name__} module given ({'dynamic' if dynamic else 'static'} shapes)"
    return _onnx(proto, label, str(model), inputs, threads)


# -- verifying -----------------------------------------------------------------------------------

@contextmanager
def _evaluating(module):
    """``module`` in eval mode (dropout off, as exported), then as it was."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def _agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    """How often the argmax over the last axis (a class per step and sequence) agrees."""
    if ref.ndim < 3 or ref.shape[-1] < 2 or ref.shape != got.shape:
        return {}
    same = ref.argmax(-1) == got.argmax(-1)
    return {"decisions": int(same.size), "prediction_agreement": float(same.mean())}


def verify(reference, model, inputs=None, *, runtime: str = "ort", threads: int = 1, rtol: float = RTOL,
           margin: float = MARGIN, dynamic: bool = True) -> Report:
    """Verify ``model`` against the PyTorch module ``reference`` on ``inputs`` (module docstring).

    ``model``: an ONNX file or ``ModelProto`` (run by ``runtime``: ``"ort"``, ``"torch"`` or a
    target name, then compiled for it), a compiled artifact or its folder, or a target name (the
    module is exported, with symbolic time and batch unless ``dynamic=False``, and compiled for
    it). ``inputs``: a ``[T, B, I]`` tensor or array, or a dict of arrays named as the model's
    inputs; None: random currents of the model's input shape (the report says so).
    """
    import torch

    if not isinstance(reference, torch.nn.Module):
        raise ConfigError(f"reference: expected a torch.nn.Module, got {type(reference).__name__}")
    given = inputs is not None
    with _evaluating(reference) as module:
        side = _under_test(module, model, inputs, runtime, threads, dynamic)
        feeds = given_feeds(list(side.shapes), inputs) if given else random_feeds(side.shapes)
        label = f"PyTorch, the {type(module).__name__} module given"
        ref = LayerReference(module, label, side.probes, list(side.shapes), side.outputs)
        wanted = list(dict.fromkeys(side.outputs + [n for p in side.probes for n in (p.Z, p.V, p.A)]))
        got = side.runtime.run(feeds, wanted)  # first: the runtime's checks name a mismatched input
        expected = ref.run(feeds, wanted)
    result = compare(expected, got, side.probes, side.outputs, rtol, margin)
    readout = "Y" if "Y" in side.outputs else side.outputs[0]
    entry = {**dataset_entry(result, bool(side.probes)), **_agreement(expected[readout], got[readout])}
    data = {"model": side.label, "runtime": side.runtime_name, "reference": label, "rtol": rtol, "margin": margin,
            "task": None, "inputs": _describe(feeds, given), "notes": side.notes,
            "alif_nodes": [p.node for p in side.probes], "datasets": {"given" if given else "random": entry},
            "heldout_checks": [], "passed": entry["passed"]}
    return Report(data)


# -- the command line's --module -----------------------------------------------------------------

def module_from_factory(spec: str):
    """The ``torch.nn.Module`` that ``pkg.mod:factory`` (a callable, e.g. one that loads weights)
    returns, in eval mode; ``pkg.mod`` is imported from the current folder or the Python path."""
    import sys

    import torch

    if "" not in sys.path and str(Path.cwd()) not in sys.path:  # as ``python -m`` does
        sys.path.insert(0, str(Path.cwd()))
    mod, sep, attr = spec.partition(":")
    if not sep or not mod or not attr:
        raise ConfigError(f"--module {spec}: expected MODULE:FACTORY (e.g. mypkg.nets:build)")
    try:
        found = importlib.import_module(mod)
    except Exception as e:  # noqa: BLE001 - anything the user's module raises while importing
        raise ConfigError(f"--module {spec}: cannot import '{mod}' ({type(e).__name__}: {e})") from e
    factory = getattr(found, attr, None)
    if factory is None:
        raise ConfigError(f"--module {spec}: module '{mod}' has no '{attr}'")
    if not callable(factory):
        raise ConfigError(f"--module {spec}: '{attr}' is not callable (an object of type {type(factory).__name__}); "
                          f"give a function that returns the module")
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise ConfigError(f"--module {spec}: {attr}() returned an object of type {type(module).__name__}, "
                          f"not a torch.nn.Module")
    return module.eval()
