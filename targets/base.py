"""The target abstraction: what a compiled model needs from a place it runs.

A :class:`Target` names a TVM target, says whether this machine can run it,
gives the TIR kernel of each sequence op (``ALIF``, ``LI``, ``LSTM``) for it,
and turns a compiled module into a runnable :class:`~lsnn.targets.artifact.Artifact`.
The CPU target runs in this process; CUDA and Cortex-M (later) plug in the same way.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from lsnn.reference.errors import LsnnError


class TargetError(LsnnError):
    """An unknown target, a bad option, or a target this machine cannot run."""


#: What the importer gives the kernel builder of each op, always all of them: the op's
#: attributes, ``dims`` (the layer's static sizes, ints or None: ``I``, ``H`` or ``O``) and
#: ``finite_weights`` (the weights are constants checked finite, so skipping a zero input
#: gives what the dense product gives; LSTM weights are always constants). Every builder also
#: gets ``outputs`` (:meth:`Target.kernel`).
KERNEL_ATTRIBUTES = {"ALIF": ("thr", "n_refractory", "dims", "finite_weights"),
                     "LI": ("dims", "finite_weights"), "LSTM": ("dims",)}
#: One direction of an ONNX LSTM, GRU or RNN in general (:class:`lsnn.targets.cells.Cell`, which
#: lists the kernel's arguments); ``LSTM`` is its plain forward form with constant weights
RECURRENT = "Recurrent"
KERNEL_ATTRIBUTES[RECURRENT] = ("dims", "cell")
#: An ALIF layer and the LI readout of its spikes in one kernel, for targets that have it: the
#: ALIF's attributes, ``dims`` with the readout's ``O``, and ``readout``, the LI's outputs read
#: (``outputs`` are the ALIF's, ``Z`` only if something besides the readout reads it)
FUSED_READOUT = "ALIF+LI"
KERNEL_ATTRIBUTES[FUSED_READOUT] = KERNEL_ATTRIBUTES["ALIF"] + ("readout",)
#: A plain forward LSTM and the readout of its ``Y`` (``h_t W + b`` of every step: ONNX's
#: ``Squeeze -> MatMul -> Add`` chain with constants) in one kernel, for targets that have it:
#: ``dims`` with the readout's ``O``; ``outputs`` are the LSTM's, ``Y`` only if something
#: besides the readout reads it. Its arguments are the ``LSTM`` kernel's, then ``W [H, O]`` and
#: the bias ``[O]``; its outputs the ``LSTM``'s, then the readout ``[T, B, O]``.
LSTM_READOUT = "LSTM+Readout"
KERNEL_ATTRIBUTES[LSTM_READOUT] = ("dims",)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class Option:
    """A target option: its default fixes its type (bool, int or str); ``choices`` or ``check``
    (a function returning why a value is wrong, or None) narrow it further."""
    default: bool | int | str
    help: str
    choices: tuple = ()
    check: Callable[[object], str | None] | None = None

    def parse(self, target: str, name: str, value) -> bool | int | str:
        """``value`` (a Python value, or the text given on the command line) as this option's type."""
        kind = type(self.default)
        text = str(value).strip().lower()
        if kind is bool and not isinstance(value, bool):
            if text not in _TRUE + _FALSE:
                raise TargetError(f"target '{target}': option {name}={value!r} is not a boolean (true or false)")
            value = text in _TRUE
        elif kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            try:
                value = int(str(value), 10)
            except ValueError:
                raise TargetError(f"target '{target}': option {name}={value!r} is not an integer") from None
        elif kind is str and not isinstance(value, str):
            raise TargetError(f"target '{target}': option {name}={value!r} is not a string")
        if self.choices and value not in self.choices:
            raise TargetError(f"target '{target}': option {name}={value!r} is not one of "
                              f"{', '.join(map(str, self.choices))}")
        why = self.check(value) if self.check else None
        if why:
            raise TargetError(f"target '{target}': option {name}={value!r}: {why}")
        return value


class Target:
    name: str = ""
    #: op name -> kernel builder (the op's KERNEL_ATTRIBUTES and the target's kernel_settings, as
    #: keyword arguments) -> TIR PrimFunc, or the builder's "module:name", imported when first
    #: used (running an artifact needs no compiler)
    kernels: dict[str, Callable | str] = {}

    def __init__(self, **options):
        spec = self.option_spec()
        unknown = set(options) - set(spec)
        if unknown:
            raise TargetError(f"target '{self.name}' has no option(s) {sorted(unknown)}; "
                              f"it takes {sorted(spec)}")
        self.options = {k: spec[k].parse(self.name, k, options[k]) if k in options else o.default
                        for k, o in spec.items()}

    @classmethod
    def option_spec(cls) -> dict[str, Option]:
        """The options this target takes, by name."""
        return {}

    def target_dict(self) -> dict:
        """The TVM target as a JSON dict (``{"kind": "llvm", ...}``)."""
        raise NotImplementedError

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.target_dict())

    def can_run(self) -> tuple[bool, str]:
        """Whether this machine can run artifacts of this target, and why not."""
        return True, ""

    def kernel(self, op: str, *, outputs: frozenset | None = None, **attrs):
        """The TIR kernel of ``op``. ``attrs`` are exactly the op's :data:`KERNEL_ATTRIBUTES`; the
        builder gets them, ``outputs`` and the target's :meth:`kernel_settings`, as keyword
        arguments. ``outputs``: the names (as in the op schema) of the node's outputs the graph
        reads, every one when not given; a kernel need compute and store no other (it keeps
        its parameters), and always writes ALIF's ``Z`` and LI's ``Y``."""
        if op not in self.kernels:
            raise TargetError(f"target '{self.name}' has no kernel for {op}")
        declared = KERNEL_ATTRIBUTES[op]
        unknown, missing = sorted(set(attrs) - set(declared)), sorted(set(declared) - set(attrs))
        if unknown or missing:
            raise TargetError(f"{op} kernel of target '{self.name}': " +
                              "; ".join(([f"unknown attribute(s) {unknown}"] if unknown else []) +
                                        ([f"missing attribute(s) {missing}"] if missing else [])) +
                              f" (it takes {list(declared)})")
        builder = self.kernels[op]
        if isinstance(builder, str):
            module, name = builder.split(":")
            builder = getattr(importlib.import_module(module), name)
        if outputs is None:
            from lsnn.compiler.onnx.schema import ALIF, LSTM, OPS

            outputs = frozenset(p.name for p in {**OPS, LSTM.name: LSTM, RECURRENT: LSTM, FUSED_READOUT: ALIF,
                                                 LSTM_READOUT: LSTM}[op].outputs)
        return builder(**attrs, outputs=frozenset(outputs), **self.kernel_settings(op))

    def fuses_readout(self) -> bool:
        """Whether this target computes an ALIF layer's LI readout in the ALIF's kernel."""
        return FUSED_READOUT in self.kernels

    def fuses_lstm_readout(self) -> bool:
        """Whether this target computes the readout of a plain LSTM's ``Y`` in the LSTM's kernel
        (:data:`LSTM_READOUT`)."""
        return LSTM_READOUT in self.kernels

    def lstm_recurrent_layout(self, rt):
        """``R^T [H, 4H]`` of a plain LSTM (a constant) as this target's ``LSTM`` and
        :data:`LSTM_READOUT` kernels take it: as it is, unless the target says otherwise."""
        return rt

    def kernel_settings(self, op: str) -> dict:
        """The target's own keyword arguments for the kernel builder of ``op`` (e.g. ``events``)."""
        return {}

    def device(self):
        """The TVM device artifacts of this target run on."""
        import tvm

        return tvm.cpu(0)

    def compile(self, proto, source: dict):
        """An artifact built by the target itself, or None to take the Relax VM path
        (Cortex-M builds a firmware project instead). ``source`` is what the manifest says of
        the source model (:func:`lsnn.compiler.build.source_manifest`)."""
        return None

    def finalize(self, executable, manifest: dict) -> dict:
        """After TVM built the module: extra files for the artifact (CUDA: nvcc's fatbins)."""
        return {}

    def load_artifact(self, directory, manifest: dict):
        """A saved artifact of this target (its manifest read): by default TVM's library and the
        files the manifest names (:func:`lsnn.targets.artifact.load_library`); Cortex-M loads its
        project folder instead."""
        from .artifact import load_library

        return load_library(self, directory, manifest)

    def prepare_load(self, directory, manifest: dict) -> None:
        """Before a saved artifact's library is loaded (CUDA: hand its fatbins to TVM)."""

    def before_run(self) -> None:
        """Before each run of an artifact, on the thread that runs it (CPU: size the thread pool)."""

    def relax_pipeline(self):
        from tvm import relax

        return relax.get_default_pipeline(self.tvm_target())

    def describe(self) -> dict:
        return {"name": self.name, "options": self.options, "tvm_target": self.target_dict()}


_REGISTRY: dict[str, type[Target]] = {}


def register(cls: type[Target]) -> type[Target]:
    _REGISTRY[cls.name] = cls
    return cls


def get_target(target: str | Target, **options) -> Target:
    from . import cortex_m, cpu, cuda  # noqa: F401  (each target module registers itself)

    if isinstance(target, Target):
        return target
    if target not in _REGISTRY:
        raise TargetError(f"unknown target '{target}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[target](**options)


def available() -> list[str]:
    from . import cortex_m, cpu, cuda  # noqa: F401

    return sorted(_REGISTRY)
