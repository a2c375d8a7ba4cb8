"""Seconds per sMNIST LSNN training step at the default batch of 64, in one process or in each of
the processes torchrun starts (the same global batch, data-parallel); not a test.

Side by side (what a ratio should come from on a shared machine, whose speed drifts by tens of
percent within minutes)::

    .venv/bin/python bench/benchmarks/train_parallel.py --interleaved 12 10

starts three jobs, one thread per process: one process; two under torchrun; and the machine's own
ceiling for two processes, two independent processes on half the batch each, one pinned to each
core. Each takes its ``WARMUP`` steps; then they take turns: in each of 12 rounds, 10 steps of
each job in turn, the jobs not on turn blocked (no CPU). Prints each round's median step times
and ratios, then the median of the rounds' ratios.

One job alone (any batch size), every step's time in one JSON line with the median after
``WARMUP`` steps::

    .venv/bin/python bench/benchmarks/train_parallel.py 40
    OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc-per-node 2 bench/benchmarks/train_parallel.py 40
"""
import argparse
import errno
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lsnn.reference import distributed
from lsnn.reference.train import Trainer, _new, hyperparameters

WARMUP = 10  # the first steps are slower: a network at its initial weights fires more
BATCH = 64


def _steps(par, trainer, first: int, n: int) -> list[float]:
    """Seconds of steps ``first .. first + n`` on this process, which start together (a barrier);
    no barrier between steps, as in ``lsnn train``: each step's collectives already wait for the
    slowest process."""
    times = []
    par.barrier()
    for s in range(first, first + n):
        t = time.perf_counter()
        trainer.step(s)
        times.append(time.perf_counter() - t)
    par.barrier()
    return times


def _train(steps: int, batch_size: int, turns=None) -> list[float]:
    """Train a new model: ``steps`` steps, and their times on the main process (none elsewhere);
    or, with ``turns`` (called on the main process before each round, and then with the round's
    times), ``WARMUP`` steps and then rounds of ``steps`` steps for as long as ``turns`` says."""
    if not distributed.under_torchrun():
        torch.set_num_threads(1)
    with distributed.session() as par:
        hp = hyperparameters("smnist", steps, batch_size)
        with tempfile.TemporaryDirectory() as out:
            task, model, config = _new(Path(out), "smnist", "lsnn", hp, None, None, None)
            trainer = Trainer(Path(out), task, model, config, None, parallel=par)
            model.train()
            if turns is None:
                times = _steps(par, trainer, 0, steps)
                return times if par.is_main else []
            first = WARMUP
            _steps(par, trainer, 0, first)
            while par.broadcast(turns(None) if par.is_main else None):
                times = _steps(par, trainer, first, steps)
                first += steps
                if par.is_main:
                    turns(times)
            return []


def serve(folder: str, steps: int, batch_size: int) -> None:
    """A worker of :func:`interleaved`: waits for ``go`` on ``folder/go`` (a FIFO), runs ``steps``
    steps, answers their times on ``folder/done``; ``stop`` ends it."""
    pipes = {}

    def turns(times):
        if times is None:
            if not pipes:
                pipes["go"] = open(f"{folder}/go")
                pipes["done"] = open(f"{folder}/done", "w")
            return pipes["go"].readline().strip() == "go"
        pipes["done"].write(json.dumps(times) + "\n")
        pipes["done"].flush()
        return None

    _train(steps, batch_size, turns)


def _jobs(cpus: list[int]) -> dict[str, list[tuple[list[str], int]]]:
    """The jobs side by side, each its workers' command prefixes and batch sizes: one process; two
    under torchrun; and the machine's own ceiling for two processes, two independent one-thread
    processes on half the batch each, one pinned to each core (no communication)."""
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    return {"1 process": [([sys.executable], BATCH)],
            "torchrun 2 processes": [([torchrun, "--standalone", "--nproc-per-node", "2"], BATCH)],
            "2 independent half-batch processes": [(["taskset", "-c", str(c), sys.executable], BATCH // 2)
                                                   for c in cpus[:2]]}


class _Worker:
    """A worker process of :func:`interleaved` and its two FIFOs."""

    def __init__(self, name: str, prefix: list[str], batch_size: int, steps: int, folder: Path, env: dict):
        self.name, self.folder = name, folder
        folder.mkdir()
        for pipe in ("go", "done"):
            os.mkfifo(folder / pipe)
        self.proc = subprocess.Popen(prefix + [__file__, str(steps), str(batch_size), "--serve", str(folder)],
                                     env=env)

    def connect(self) -> None:
        """Open the FIFOs once the worker has (after its warm-up); a worker that died says so."""
        while True:
            try:
                fd = os.open(self.folder / "go", os.O_WRONLY | os.O_NONBLOCK)  # ENXIO until it reads
                break
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                self._alive()
                time.sleep(0.1)
        os.set_blocking(fd, True)
        self.go = os.fdopen(fd, "w")
        self.done = open(self.folder / "done")

    def _alive(self) -> None:
        if self.proc.poll() is not None:
            raise SystemExit(f"train_parallel.py: the worker of '{self.name}' ended with exit status "
                             f"{self.proc.returncode} (its error is above)")

    def send(self, word: str) -> None:
        self.go.write(word + "\n")
        self.go.flush()

    def times(self) -> list[float]:
        line = self.done.readline()
        if not line:
            self.proc.wait()
            self._alive()
        return json.loads(line)

    def close(self) -> None:
        self.send("stop")
        self.go.close()
        self.done.close()
        self.proc.wait()


def interleaved(rounds: int, steps: int) -> None:
    """The :func:`_jobs`, ``rounds`` turns of ``steps`` steps each; a job's time in a round is the
    median step of its slowest worker."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        jobs = {name: [_Worker(name, prefix, batch, steps, Path(tmp) / f"{j}-{w}", env)
                       for w, (prefix, batch) in enumerate(workers)]
                for j, (name, workers) in enumerate(_jobs(sorted(os.sched_getaffinity(0))).items())}
        for worker in (w for workers in jobs.values() for w in workers):
            worker.connect()
        medians = {name: [] for name in jobs}
        one, two, ceiling = jobs
        for r in range(rounds):
            for name, workers in jobs.items():
                for worker in workers:
                    worker.send("go")
                medians[name].append(max(statistics.median(worker.times()) for worker in workers))
            m = {name: v[-1] for name, v in medians.items()}
            print(f"round {r + 1}: " + ", ".join(f"{name} {v:.4f} s" for name, v in m.items()) +
                  f" per step: torchrun x{m[one] / m[two]:.2f}, ceiling x{m[one] / m[ceiling]:.2f}", flush=True)
        for worker in (w for workers in jobs.values() for w in workers):
            worker.close()
    speedup = {name: [a / b for a, b in zip(medians[one], medians[name])] for name in (two, ceiling)}
    print(f"median over {rounds} rounds of {steps} steps: torchrun x{statistics.median(speedup[two]):.2f} "
          f"(x{min(speedup[two]):.2f}-x{max(speedup[two]):.2f}), two independent processes "
          f"x{statistics.median(speedup[ceiling]):.2f} (x{min(speedup[ceiling]):.2f}-x{max(speedup[ceiling]):.2f}); "
          f"torchrun against them, round by round: {statistics.median(c / t for c, t in zip(medians[ceiling], medians[two])):.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("steps", type=int, nargs="?", default=30)
    ap.add_argument("batch_size", type=int, nargs="?", default=BATCH)
    ap.add_argument("--interleaved", type=int, metavar="ROUNDS", help="rounds of STEPS steps each, side by side")
    ap.add_argument("--serve", metavar="FOLDER", help=argparse.SUPPRESS)  # a worker of --interleaved
    args = ap.parse_args()
    if args.interleaved:
        interleaved(args.interleaved, args.steps)
    elif args.serve:
        serve(args.serve, args.steps, args.batch_size)
    else:
        times = _train(args.steps, args.batch_size)
        if times:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            print(json.dumps({"processes": world, "threads": torch.get_num_threads(), "batch_size": args.batch_size,
                              "median_s": round(statistics.median(times[WARMUP:]), 4),
                              "times": [round(x, 4) for x in times]}))


if __name__ == "__main__":
    main()
