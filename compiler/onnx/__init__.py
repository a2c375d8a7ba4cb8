"""ONNX side of lsnn: the ``ai.lsnn`` schema, its function bodies, the exporter and the validator."""
