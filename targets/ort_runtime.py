"""Stock onnxruntime. Bare ``ai.lsnn`` nodes get the suite's function bodies attached,
so ORT needs no custom-op library."""
from __future__ import annotations

import onnx
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from lsnn.compiler.onnx.functions import attach
from lsnn.compiler.onnx.validate import ModelError

from .runtime import OnnxRuntimeBase

#: what onnxruntime raises for a model it cannot load (an unknown op or domain, a bad graph)
LOAD_ERRORS = (ort_errors.Fail, ort_errors.InvalidGraph, ort_errors.InvalidArgument, ort_errors.InvalidProtobuf,
               ort_errors.NotImplemented, ort_errors.RuntimeException)
#: what it raises for a run that fails (feeds are checked before, so these are the model's)
RUN_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.RuntimeException, ort_errors.NotImplemented)


class OrtRuntime(OnnxRuntimeBase):
    name = "ort"

    def __init__(self, model: onnx.ModelProto, threads: int = 1):
        super().__init__(model)
        runnable = attach(model)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(runnable.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        except LOAD_ERRORS as e:
            raise ModelError(f"onnxruntime cannot load the model: {e}") from e
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, inputs, outputs=None):
        self.check(inputs)
        names = outputs or self.outputs
        try:
            values = self.session.run(names, inputs)
        except RUN_ERRORS as e:
            raise ModelError(f"onnxruntime failed: {e}") from e
        return dict(zip(names, values))
