"""The reference runtime: ONNX's own reference evaluator, with the ``ai.lsnn`` ops
computed by :mod:`lsnn.reference` (their executable definition).

This is the oracle every other runtime and target is checked against; it
ignores the function bodies a model carries.
"""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from lsnn.compiler.onnx.schema import ALIF as ALIF_SCHEMA, DOMAIN, LI as LI_SCHEMA
from lsnn.compiler.onnx.validate import ModelError
from lsnn.reference import alif, li

from .runtime import OnnxRuntimeBase


def _t(x):
    return None if x is None else torch.from_numpy(np.array(x, dtype=np.float32, order="C", copy=True))


class _ALIF(OpRun):
    op_domain = DOMAIN

    def _run(self, *inputs, **attributes):
        x = ALIF_SCHEMA.bind(inputs)
        a = ALIF_SCHEMA.attribute_values(attributes)
        B, H = x["X"].shape[1], x["W"].shape[0]
        state = [x[s.input] for s in ALIF_SCHEMA.states]
        state = None if all(s is None for s in state) else \
            tuple(_t(s) if s is not None else torch.zeros(B, H) for s in state)
        with torch.no_grad():
            Z, V, A, final = alif(*(_t(x[p.name]) for p in ALIF_SCHEMA.inputs if p.required), a["thr"],
                                  a["n_refractory"], state)
        outs = [Z, V, A, *final]
        return tuple(o.numpy() for o in outs[:len(self.onnx_node.output)])


class _LI(OpRun):
    op_domain = DOMAIN

    def _run(self, *inputs):
        x = LI_SCHEMA.bind(inputs)
        with torch.no_grad():
            Y, final = li(*(_t(x[p.name]) for p in LI_SCHEMA.inputs))
        return tuple(o.numpy() for o in (Y, final)[:len(self.onnx_node.output)])


_ALIF.__name__ = ALIF_SCHEMA.name
_LI.__name__ = LI_SCHEMA.name


def _name_unwanted_outputs(graph: onnx.GraphProto) -> None:
    """Give every output left out with ``""`` a name of its own. ONNX's evaluator stores each
    output by name, so an output named ``""`` would become what later nodes read for an
    optional input they leave out with ``""``."""
    for i, node in enumerate(graph.node):
        for k, name in enumerate(node.output):
            if not name:
                node.output[k] = f"lsnn.unwanted.{i}.{k}"


class TorchRuntime(OnnxRuntimeBase):
    name = "torch"

    def __init__(self, model: onnx.ModelProto, threads: int = 1):
        super().__init__(model)
        bare = onnx.ModelProto()
        bare.CopyFrom(model)
        del bare.functions[:]  # the ai.lsnn ops come from lsnn.reference, not from bodies
        _name_unwanted_outputs(bare.graph)
        torch.set_num_threads(threads)
        try:
            self.evaluator = ReferenceEvaluator(bare, new_ops=[_ALIF, _LI])
        except NotImplementedError as e:  # an op (or domain) the evaluator does not know
            raise ModelError(f"the reference evaluator cannot run the model: {e}") from e
        inits = {i.name for i in model.graph.initializer}
        self.inputs = [i.name for i in model.graph.input if i.name not in inits]
        self.outputs = [o.name for o in model.graph.output]

    def run(self, inputs, outputs=None):
        self.check(inputs)
        names = outputs or self.outputs
        values = self.evaluator.run(names, inputs)
        return dict(zip(names, values))
