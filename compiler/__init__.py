"""lsnn.compiler: ONNX (with ai.lsnn ops) to TVM. Not built yet; see the issue tracker."""
