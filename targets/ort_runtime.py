"""Stock onnxruntime. Bare ``ai.lsnn`` nodes get the suite's function bodies attached,
so ORT needs no custom-op library."""
from __future__ import annotations

import onnx
import onnxruntime as ort

from lsnn.compiler.onnx.functions import attach
from lsnn.compiler.onnx.validate import ModelError

from .runtime import OnnxRuntimeBase


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
        except Exception as e:
            raise ModelError(f"onnxruntime cannot load the model: {e}") from e
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, inputs, outputs=None):
        self.check(inputs)
        names = outputs or self.outputs
        try:
            values = self.session.run(names, inputs)
        except Exception as e:
            raise ModelError(f"onnxruntime failed: {e}") from e
        return dict(zip(names, values))
