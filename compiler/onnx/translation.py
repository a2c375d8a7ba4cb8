"""The ONNX translation of the suite's torch custom ops (:mod:`lsnn.reference.ops`), for
``torch.onnx.export(..., custom_translation_table=TABLE)``.

``torch.ops.lsnn.alif`` becomes one ``ai.lsnn::ALIF`` node and ``torch.ops.lsnn.li``
one ``ai.lsnn::LI`` node, with the ports and attributes of the op schema
(:mod:`.schema`); the exporter records them through onnxscript, which needs an
ONNX ``OpSchema``: :func:`onnx_schema` builds one from the suite's table, for
onnxscript only (it is not registered with ONNX, so checkers and runtimes go by
the function bodies that :func:`lsnn.compiler.onnx.functions.attach` adds).
"""
from __future__ import annotations

import torch
from onnx.defs import OpSchema as OnnxOpSchema
from onnxscript._internal.values import Op, Opset

import lsnn.reference.ops  # noqa: F401  (registers torch.ops.lsnn.*)

from .schema import ALIF, DOMAIN, LI, VERSION, OpSchema

_ATTRIBUTE_TYPES = {"float": OnnxOpSchema.AttrType.FLOAT, "int": OnnxOpSchema.AttrType.INT}


def onnx_schema(op: OpSchema) -> OnnxOpSchema:
    """An ONNX ``OpSchema`` of one ``ai.lsnn`` op: float32 ports, optional where the spec says so."""
    def ports(ps):
        return [OnnxOpSchema.FormalParameter(
            p.name, "T", param_option=OnnxOpSchema.FormalParameterOption.Single if p.required
            else OnnxOpSchema.FormalParameterOption.Optional) for p in ps]

    return OnnxOpSchema(
        op.name, op.domain, VERSION, f"{op.domain}::{op.name} v{VERSION} (shared/spec/ops.md)",
        inputs=ports(op.inputs), outputs=ports(op.outputs),
        type_constraints=[("T", ["tensor(float)"], "float32")],
        attributes=[OnnxOpSchema.Attribute(name, _ATTRIBUTE_TYPES[kind], "") for name, (kind, _) in op.attributes.items()],
    )


_OPSET = Opset(DOMAIN, VERSION)
_ALIF = Op(_OPSET, ALIF.name, onnx_schema(ALIF))
_LI = Op(_OPSET, LI.name, onnx_schema(LI))


def alif(X, W, R, beta, alpha, rho, initial_v=None, initial_a=None, initial_z=None, initial_r=None,
         thr: float = 0.01, n_refractory: int = 0):
    return _ALIF(X, W, R, beta, alpha, rho, initial_v, initial_a, initial_z, initial_r,
                 thr=float(thr), n_refractory=int(n_refractory), _outputs=len(ALIF.outputs))


def li(X, W, alpha, bias=None, initial_y=None):
    return _LI(X, W, alpha, bias, initial_y, _outputs=len(LI.outputs))


#: torch custom op -> ONNX translation, as ``torch.onnx.export`` takes it
TABLE = {torch.ops.lsnn.alif.default: alif, torch.ops.lsnn.li.default: li}
