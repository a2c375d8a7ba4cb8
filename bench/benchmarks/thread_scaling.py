"""One thread against all cores for a checkpoint's cpu artifact at batch 64 (the graph with its
readout ``Y`` as the only output, as ``lsnn bench`` times it), calls interleaved; not a test.

Each round also times the machine's own ceiling: one process per core, pinned to it, each
running its share of the batch on the one-thread artifact at the same moment (no thread pool,
nothing shared but the machine). All cores can at best match it; what it gives below x(cores)
is the machine's (a shared host's vCPUs at that moment), not the kernels'. Each line ends with
the CPU time other processes took meanwhile (as a share of one core): a core that something
else uses makes both figures meaningless, so a run with more than a few percent should be
repeated once that work is paused or done.

``--contended`` times the same while another process keeps the last core busy (a
program the machine also runs): that core's thread gets about half of it. A fixed split of the
batch would make the call wait for that thread's share (x1.0 on two cores); the kernels hand
sequences to whichever thread is free (:mod:`lsnn.targets.cpu.worklist`), so two cores can
reach x1.5.

    .venv/bin/python bench/benchmarks/thread_scaling.py models/smnist-lsnn models/smnist-lstm
    .venv/bin/python bench/benchmarks/thread_scaling.py --steady models/smnist-lsnn models/smnist-lstm
    .venv/bin/python bench/benchmarks/thread_scaling.py --contended models/smnist-lsnn models/smnist-lstm
"""
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time

ROUNDS, WARMUP, BATCH = 25, 3, 64
SETTLE = 0.1  # s: the thread pool's worker spins ~75 ms after a parallel call before it sleeps


def _ticks(pid="self") -> int:
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _busy_ticks() -> int:
    """Clock ticks every CPU spent busy (all but idle and iowait)."""
    with open("/proc/stat") as f:
        cpu = [int(v) for v in f.readline().split()[1:]]
    return sum(cpu) - cpu[3] - cpu[4]


def _inputs(checkpoint: str):
    from lsnn.reference.checkpoint import load
    from lsnn.reference.tasks import task_from_config

    _, config, _ = load(checkpoint)
    return next(task_from_config(config["task"]).heldout(BATCH, BATCH))[0].numpy()


def _share(checkpoint, folder, name, cpu, cpus, go, done):
    """A pinned process: ``cpu``'s share of the batch on the one-thread artifact, once per round."""
    from lsnn.targets.artifact import aligned, load

    os.sched_setaffinity(0, {cpu})
    k = cpus.index(cpu)
    x = aligned(_inputs(checkpoint)[:, k * BATCH // len(cpus):(k + 1) * BATCH // len(cpus)])
    art = load(folder)
    for _ in range(WARMUP):
        art.run({name: x})
    for _ in range(ROUNDS):
        go.wait()
        art.run({name: x})
        done.wait()


def _artifacts(checkpoint: str):
    """The checkpoint's graph with ``Y`` as its only output, compiled for one thread (key 1) and
    all cores (key 0), and the name of its input."""
    from lsnn.compiler import compile
    from lsnn.compiler.onnx.export import export_checkpoint

    proto = export_checkpoint(checkpoint, heldout=0)
    kept = [o for o in proto.graph.output if o.name == "Y"]
    del proto.graph.output[:]
    proto.graph.output.extend(kept)
    return {t: compile(proto, "cpu", threads=t) for t in (1, 0)}, proto.graph.input[0].name


def scaling(checkpoint: str) -> str:
    from lsnn.targets.artifact import aligned
    from lsnn.targets.cpu.threadpool import cpus

    arts, name = _artifacts(checkpoint)
    feed = {name: aligned(_inputs(checkpoint))}
    times = {t: [] for t in (1, 0, "shares")}
    with tempfile.TemporaryDirectory() as tmp:
        arts[1].save(f"{tmp}/one")
        spawn = mp.get_context("spawn")  # a fresh interpreter: no TVM thread pool forked along
        go, done = spawn.Barrier(len(cpus()) + 1), spawn.Barrier(len(cpus()) + 1)
        shares = [spawn.Process(
            target=_share, args=(checkpoint, f"{tmp}/one", name, c, cpus(), go, done)) for c in cpus()]
        for p in shares:
            p.start()
        for t, art in arts.items():
            for _ in range(WARMUP):
                art.run(feed)
        busy0, own0, began = _busy_ticks(), _ticks() + sum(_ticks(p.pid) for p in shares), time.perf_counter()
        for _ in range(ROUNDS):
            for t, art in arts.items():
                start = time.perf_counter()
                art.run(feed)
                times[t].append(time.perf_counter() - start)
            time.sleep(SETTLE)
            start = time.perf_counter()
            go.wait()
            done.wait()
            times["shares"].append(time.perf_counter() - start)
        own1 = _ticks() + sum(_ticks(p.pid) for p in shares)
        other = (_busy_ticks() - busy0 - (own1 - own0)) / os.sysconf("SC_CLK_TCK") / (time.perf_counter() - began)
        for p in shares:
            p.join()
    one, all_, ceiling = (statistics.median(times[k]) for k in (1, 0, "shares"))
    return (f"{checkpoint} batch {BATCH}: 1 thread {one * 1e3:.2f} ms, all cores {all_ * 1e3:.2f} ms per call: "
            f"x{one / all_:.2f}; {len(shares)} pinned one-thread processes, a share of the batch each: "
            f"{ceiling * 1e3:.2f} ms, x{one / ceiling:.2f} (other processes meanwhile: {other:.0%} of a core)")


def steady(checkpoint: str, rounds: int = ROUNDS) -> str:
    """One thread against all cores in steady use: rounds of back-to-back calls (two untimed, then
    one timed, for each in turn; no pause, so the pool's workers never sleep), the throughput a
    server that is kept busy sees. One thread is timed on each core in turn (the calling thread
    pinned): a shared host's cores need not be equally fast, and all cores wait for the slowest."""
    from lsnn.targets.artifact import aligned
    from lsnn.targets.cpu.threadpool import cpus

    arts, name = _artifacts(checkpoint)
    feed = {name: aligned(_inputs(checkpoint))}
    everywhere = set(cpus())
    # all cores first: TVM sizes its thread pool by the CPUs its caller may use when it first runs
    runs = [("all cores", arts[0], everywhere)] + [(f"1 thread on cpu {c}", arts[1], {c}) for c in sorted(everywhere)]
    times = {name: [] for name, _, _ in runs}
    for _ in range(rounds):
        for name, art, where in runs:
            os.sched_setaffinity(0, where)
            for _ in range(2):
                art.run(feed)
            start = time.perf_counter()
            art.run(feed)
            times[name].append(time.perf_counter() - start)
    os.sched_setaffinity(0, everywhere)
    med = {name: statistics.median(t) for name, t in times.items()}
    ones = [v for name, v in med.items() if name != "all cores"]
    mean_one = statistics.mean(ones)
    return (f"{checkpoint} batch {BATCH}, steady: " + ", ".join(f"{n} {v * 1e3:.2f} ms" for n, v in med.items())
            + f" per call: x{mean_one / med['all cores']:.2f} against one thread's mean over the cores "
              f"(x{min(ones) / med['all cores']:.2f}-x{max(ones) / med['all cores']:.2f} against each)")


def _spin(cpu: int, stop) -> None:
    """Keep ``cpu`` busy until ``stop`` is set."""
    os.sched_setaffinity(0, {cpu})
    while not stop.is_set():
        sum(range(10000))


def contended(checkpoint: str, rounds: int = ROUNDS) -> str:
    """One thread against all cores, calls interleaved, while another process spins on the last
    core."""
    from lsnn.targets.artifact import aligned
    from lsnn.targets.cpu.threadpool import cpus

    arts, name = _artifacts(checkpoint)
    feed = {name: aligned(_inputs(checkpoint))}
    for art in arts.values():
        for _ in range(WARMUP):
            art.run(feed)
    spawn = mp.get_context("spawn")
    stop = spawn.Event()
    spinner = spawn.Process(target=_spin, args=(cpus()[-1], stop))
    spinner.start()
    times = {t: [] for t in arts}
    try:
        time.sleep(1.0)  # the spinner's interpreter up and running
        for _ in range(rounds):
            for t, art in arts.items():
                start = time.perf_counter()
                art.run(feed)
                times[t].append(time.perf_counter() - start)
    finally:
        stop.set()
        spinner.join()
    one, all_ = (statistics.median(times[t]) for t in (1, 0))
    return (f"{checkpoint} batch {BATCH}, cpu {cpus()[-1]} shared with a spinning process: 1 thread "
            f"{one * 1e3:.2f} ms, all cores {all_ * 1e3:.2f} ms per call: x{one / all_:.2f}")


if __name__ == "__main__":
    modes = {"--steady": steady, "--contended": contended}
    measure = next((modes[a] for a in sys.argv[1:] if a in modes), scaling)
    for c in (a for a in sys.argv[1:] if a not in modes):
        print(measure(c), flush=True)
