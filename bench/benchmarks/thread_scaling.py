"""One thread against all cores for a checkpoint's cpu artifact at batch 64 (the graph with its
readout ``Y`` as the only output, as ``lsnn bench`` times it), calls interleaved; not a test.

    .venv/bin/python bench/benchmarks/thread_scaling.py models/smnist-lsnn models/smnist-lstm
"""
import statistics
import sys
import time

from lsnn.compiler import compile
from lsnn.compiler.onnx.export import export_checkpoint
from lsnn.reference.checkpoint import load
from lsnn.reference.tasks import task_from_config
from lsnn.targets.artifact import aligned

ROUNDS, WARMUP, BATCH = 25, 3, 64


def scaling(checkpoint: str) -> str:
    _, config, _ = load(checkpoint)
    X, _ = next(task_from_config(config["task"]).heldout(BATCH, BATCH))
    proto = export_checkpoint(checkpoint, heldout=0)
    kept = [o for o in proto.graph.output if o.name == "Y"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    arts = {t: compile(proto, "cpu", threads=t) for t in (1, 0)}
    feed = {proto.graph.input[0].name: aligned(X.numpy())}
    times = {t: [] for t in arts}
    for t, art in arts.items():
        for _ in range(WARMUP):
            art.run(feed)
    for _ in range(ROUNDS):
        for t, art in arts.items():
            start = time.perf_counter()
            art.run(feed)
            times[t].append(time.perf_counter() - start)
    one, all_ = statistics.median(times[1]), statistics.median(times[0])
    return f"{checkpoint} batch {BATCH}: 1 thread {one * 1e3:.2f} ms, all cores {all_ * 1e3:.2f} ms per call: x{one / all_:.2f}"


if __name__ == "__main__":
    for c in sys.argv[1:]:
        print(scaling(c), flush=True)
