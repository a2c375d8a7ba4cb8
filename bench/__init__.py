"""lsnn.bench: the command line and the benchmark harness."""
