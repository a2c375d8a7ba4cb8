"""Seconds per sMNIST LSNN training step at the default batch of 64, in one process or in each of
the processes torchrun starts (the same global batch, data-parallel); not a test.

    .venv/bin/python bench/benchmarks/train_parallel.py 40
    OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc-per-node 2 bench/benchmarks/train_parallel.py 40

Prints one JSON line: the median step time after ``WARMUP`` steps, and every step's time.
Run the two one after the other, a few times, on an otherwise idle machine: compare medians.

What the machine itself gives two processes (the ceiling of the torchrun figure): two independent
processes on half the batch each, one per core, at the same time; the slower one's median::

    taskset -c 0 .venv/bin/python bench/benchmarks/train_parallel.py 60 32 &
    taskset -c 1 .venv/bin/python bench/benchmarks/train_parallel.py 60 32; wait
"""
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lsnn.reference import distributed
from lsnn.reference.train import Trainer, _new, hyperparameters

WARMUP = 10  # the first steps are slower: a network at its initial weights fires more


def main(steps: int, batch_size: int = 64) -> None:
    if not distributed.under_torchrun():
        torch.set_num_threads(1)
    with distributed.session() as par:
        hp = hyperparameters("smnist", steps, batch_size)
        with tempfile.TemporaryDirectory() as out:
            task, model, config = _new(Path(out), "smnist", "lsnn", hp, None, None, None)
            trainer = Trainer(Path(out), task, model, config, None, parallel=par)
            model.train()
            times = []
            for s in range(steps):
                par.barrier()
                t = time.perf_counter()
                trainer.step(s)
                par.barrier()
                times.append(time.perf_counter() - t)
        if par.is_main:
            print(json.dumps({"processes": par.world_size, "threads": torch.get_num_threads(),
                              "batch_size": batch_size, "median_s": round(statistics.median(times[WARMUP:]), 4),
                              "times": [round(x, 4) for x in times]}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30, *(int(a) for a in sys.argv[2:3]))
