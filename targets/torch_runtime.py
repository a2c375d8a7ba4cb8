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
from lsnn.reference import alif, li

from .runtime import OnnxRuntimeBase


def _t(x):
    return None if x is None else torch.from_numpy(np.array(x, dtype=np.float32, order="C", copy=True))


class _ALIF(OpRun):
    op_domain = DOMAIN

    def _run(self, X, W, R, beta, alpha, rho, initial_v=None, initial_a=None, initial_z=None, initial_r=None,
             thr=None, n_refractory=None):
        thr = ALIF_SCHEMA.attributes["thr"][1] if thr is None else thr
        n_ref = ALIF_SCHEMA.attributes["n_refractory"][1] if n_refractory is None else n_refractory
        B, H = X.shape[1], W.shape[0]
        state = [initial_v, initial_a, initial_z, initial_r]
        state = None if all(s is None for s in state) else \
            tuple(_t(s) if s is not None else torch.zeros(B, H) for s in state)
        with torch.no_grad():
            Z, V, A, final = alif(_t(X), _t(W), _t(R), _t(beta), _t(alpha), _t(rho), thr, n_ref, state)
        outs = [Z, V, A, *final]
        return tuple(o.numpy() for o in outs[:len(self.onnx_node.output)])


class _LI(OpRun):
    op_domain = DOMAIN

    def _run(self, X, W, alpha, bias=None, initial_y=None):
        with torch.no_grad():
            Y, final = li(_t(X), _t(W), _t(alpha), _t(bias), _t(initial_y))
        return tuple(o.numpy() for o in (Y, final)[:len(self.onnx_node.output)])


_ALIF.__name__ = ALIF_SCHEMA.name
_LI.__name__ = LI_SCHEMA.name


class TorchRuntime(OnnxRuntimeBase):
    name = "torch"

    def __init__(self, model: onnx.ModelProto, threads: int = 1):
        super().__init__(model)
        bare = onnx.ModelProto()
        bare.CopyFrom(model)
        del bare.functions[:]  # the ai.lsnn ops come from lsnn.reference, not from bodies
        torch.set_num_threads(threads)
        self.evaluator = ReferenceEvaluator(bare, new_ops=[_ALIF, _LI])
        inits = {i.name for i in model.graph.initializer}
        self.inputs = [i.name for i in model.graph.input if i.name not in inits]
        self.outputs = [o.name for o in model.graph.output]

    def run(self, inputs, outputs=None):
        self.check(inputs)
        names = outputs or self.outputs
        values = self.evaluator.run(names, inputs)
        return dict(zip(names, values))
