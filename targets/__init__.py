"""lsnn.targets: the CPU, CUDA and Cortex-M targets. Not built yet; see the issue tracker."""
