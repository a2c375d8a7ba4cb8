"""One thread against all cores for a checkpoint's cpu artifact at batch 64 (the graph with its
readout ``Y`` as the only output, as ``lsnn bench`` times it), calls interleaved; not a test.
Each line ends with the CPU time other processes took meanwhile (as a share of one core): a
second core that something else uses makes the all-cores figure meaningless, so a run with
more than a few percent should be repeated once that work is paused or done.

    .venv/bin/python bench/benchmarks/thread_scaling.py models/smnist-lsnn models/smnist-lstm
"""
import os
import statistics
import sys
import time

from lsnn.compiler import compile
from lsnn.compiler.onnx.export import export_checkpoint
from lsnn.reference.checkpoint import load
from lsnn.reference.tasks import task_from_config
from lsnn.targets.artifact import aligned

ROUNDS, WARMUP, BATCH = 25, 3, 64


def _busy_ticks() -> tuple[int, int]:
    """(clock ticks every CPU spent busy, those of this process): /proc/stat and /proc/self/stat."""
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:]]
    with open("/proc/self/stat") as f:
        own = f.read().rsplit(")", 1)[1].split()
    return sum(cpu) - cpu[3] - cpu[4], int(own[11]) + int(own[12])  # all but idle, iowait; utime + stime


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
    busy0, own0, began = *_busy_ticks(), time.perf_counter()
    for _ in range(ROUNDS):
        for t, art in arts.items():
            start = time.perf_counter()
            art.run(feed)
            times[t].append(time.perf_counter() - start)
    busy1, own1, seconds = *_busy_ticks(), time.perf_counter() - began
    other = (busy1 - busy0 - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / seconds
    one, all_ = statistics.median(times[1]), statistics.median(times[0])
    return (f"{checkpoint} batch {BATCH}: 1 thread {one * 1e3:.2f} ms, all cores {all_ * 1e3:.2f} ms per call: "
            f"x{one / all_:.2f} (other processes meanwhile: {other:.0%} of a core)")


if __name__ == "__main__":
    for c in sys.argv[1:]:
        print(scaling(c), flush=True)
