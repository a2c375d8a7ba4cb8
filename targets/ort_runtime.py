"""Stock onnxruntime. Bare ``ai.lsnn`` nodes get the suite's function bodies attached,
so ORT needs no custom-op library."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort

from lsnn.compiler.onnx.functions import attach
from lsnn.compiler.onnx.validate import ModelError, check_feeds, validate

from .runtime import Runtime


class OrtRuntime(Runtime):
    name = "ort"

    def __init__(self, model: onnx.ModelProto, threads: int = 1, probes: list[str] | None = None):
        validate(model)
        self.model = model
        self._checked: set = set()
        runnable = attach(model)
        if probes:  # expose intermediate values (e.g. V and A of an ALIF node) as graph outputs
            have = {o.name for o in runnable.graph.output}
            for p in probes:
                if p not in have:
                    runnable.graph.output.append(onnx.ValueInfoProto(name=p))
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
        signature = tuple(sorted((k, v.shape, str(v.dtype)) for k, v in inputs.items()))
        if signature not in self._checked:  # full spec check once per input signature
            check_feeds(self.model, inputs)
            self._checked.add(signature)
        names = outputs or self.outputs
        try:
            values = self.session.run(names, inputs)
        except Exception as e:
            raise ModelError(f"onnxruntime failed: {e}") from e
        return dict(zip(names, values))
