"""The target abstraction: what a compiled model needs from a place it runs.

A :class:`Target` names a TVM target, says whether this machine can run it,
gives the TIR kernel of each sequence op (``ALIF``, ``LI``, ``LSTM``) for it,
and turns a compiled module into a runnable :class:`~lsnn.targets.artifact.Artifact`.
The CPU target runs in this process; CUDA and Cortex-M (later) plug in the same way.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Callable

from lsnn.reference.errors import LsnnError


class TargetError(LsnnError):
    """An unknown target, a bad option, or a target this machine cannot run."""


class Target:
    name: str = ""
    #: op name -> kernel builder (attributes as keyword arguments) -> TIR PrimFunc, or the
    #: builder's "module:name", imported when first used (running an artifact needs no compiler)
    kernels: dict[str, Callable | str] = {}

    def __init__(self, **options):
        unknown = set(options) - set(self.option_defaults())
        if unknown:
            raise TargetError(f"target '{self.name}' has no option(s) {sorted(unknown)}; "
                              f"it takes {sorted(self.option_defaults())}")
        self.options = {**self.option_defaults(), **options}

    @classmethod
    def option_defaults(cls) -> dict:
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

    def kernel(self, op: str, **attrs):
        """The kernel of ``op``: its builder gets the attributes it takes (e.g. ``dims``, the
        layer's static sizes, only where a target specialises on them)."""
        if op not in self.kernels:
            raise TargetError(f"target '{self.name}' has no kernel for {op}")
        builder = self.kernels[op]
        if isinstance(builder, str):
            module, name = builder.split(":")
            builder = getattr(importlib.import_module(module), name)
        params = inspect.signature(builder).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            attrs = {k: v for k, v in attrs.items() if k in params}
        return builder(**attrs)

    def device(self):
        """The TVM device artifacts of this target run on."""
        import tvm

        return tvm.cpu(0)

    def compile(self, proto, source_sha256: str):
        """An artifact built by the target itself, or None to take the Relax VM path
        (Cortex-M builds a firmware project instead)."""
        return None

    def finalize(self, executable, manifest: dict) -> dict:
        """After TVM built the module: extra files for the artifact (CUDA: nvcc's fatbins)."""
        return {}

    def prepare_load(self, directory, manifest: dict) -> None:
        """Before a saved artifact's library is loaded (CUDA: hand its fatbins to TVM)."""

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
