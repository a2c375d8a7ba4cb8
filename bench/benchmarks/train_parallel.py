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

One job alone, every step's time in one JSON line with the median after ``WARMUP`` steps::

    .venv/bin/python bench/benchmarks/train_parallel.py 40
    OMP_NUM_THREADS=1 .venv/bin/torchrun --standalone --nproc-per-node 2 bench/benchmarks/train_parallel.py 40

What the machine itself gives two processes (the ceiling of the torchrun figure): two independent
processes on half the batch each, one per core, at the same time; the slower one's median::

    taskset -c 0 .venv/bin/python bench/benchmarks/train_parallel.py 60 32 &
    taskset -c 1 .venv/bin/python bench/benchmarks/train_parallel.py 60 32; wait
"""
import argparse
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
    """Train ``steps`` steps from a new model; with ``turns`` (a function called before each
    round on the main process, and after it with the round's times), ``WARMUP`` steps and then
    rounds of ``steps`` steps, each when ``turns`` returns True; every step's time."""
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
            times = _steps(par, trainer, 0, WARMUP)
            first = WARMUP
            while par.broadcast(turns(None) if par.is_main else None):
                round_ = _steps(par, trainer, first, steps)
                first += steps
                if par.is_main:
                    turns(round_)
                times += round_
            return times


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


def _jobs(cpus: list[int]) -> dict[str, list[list[str]]]:
    """The jobs side by side, each the command lines of its workers (``--serve`` to add): one
    process; two under torchrun; and the machine's own ceiling for two processes, two independent
    one-thread processes on half the batch each, one pinned to each core (no communication)."""
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    half = str(BATCH // 2)
    return {"1 process": [[sys.executable, __file__, str(BATCH)]],
            "torchrun 2 processes": [[torchrun, "--standalone", "--nproc-per-node", "2", __file__, str(BATCH)]],
            "2 independent half-batch processes": [["taskset", "-c", str(c), sys.executable, __file__, half]
                                                   for c in cpus[:2]]}


def interleaved(rounds: int, steps: int) -> None:
    """The :func:`_jobs`, ``rounds`` turns of ``steps`` steps each; a job's time in a round is the
    median step of its slowest worker."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = _jobs(sorted(os.sched_getaffinity(0)))
    with tempfile.TemporaryDirectory() as tmp:
        procs, pipes = [], {}
        for j, (name, workers) in enumerate(jobs.items()):
            for w, command in enumerate(workers):
                folder = Path(tmp) / f"{j}-{w}"
                folder.mkdir()
                for pipe in ("go", "done"):
                    os.mkfifo(folder / pipe)
                procs.append(subprocess.Popen(command[:-1] + ["--serve", str(folder), str(steps), command[-1]],
                                              env=env, stderr=subprocess.DEVNULL))
        for j, (name, workers) in enumerate(jobs.items()):
            pipes[name] = [(open(Path(tmp) / f"{j}-{w}" / "go", "w"), open(Path(tmp) / f"{j}-{w}" / "done"))
                           for w in range(len(workers))]
        medians = {name: [] for name in jobs}
        one, two, ceiling = jobs
        for r in range(rounds):
            for name, workers in pipes.items():
                for go, _ in workers:
                    go.write("go\n")
                    go.flush()
                medians[name].append(max(statistics.median(json.loads(done.readline())) for _, done in workers))
            m = {name: v[-1] for name, v in medians.items()}
            print(f"round {r + 1}: " + ", ".join(f"{name} {v:.4f} s" for name, v in m.items()) +
                  f" per step: torchrun x{m[one] / m[two]:.2f}, ceiling x{m[one] / m[ceiling]:.2f}", flush=True)
        for workers in pipes.values():
            for go, done in workers:
                go.write("stop\n")
                go.close()
                done.close()
        for proc in procs:
            proc.wait()
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
