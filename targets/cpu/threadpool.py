"""The size of TVM's runtime thread pool, which runs the kernels' parallel loops.

TVM keeps one pool per calling thread. A pool is created, at its thread's first
parallel call, with ``TVM_NUM_THREADS`` workers (by default half the machine's
hardware threads, TVM's guess at the physical cores); configuring it pins its
threads, the caller included, to the CPUs it is given. :func:`use` gives it the
CPUs this process may run on (``taskset`` narrows them, and stays in force) and
the number of threads an artifact asks for; it costs about a microsecond, so
artifacts with different ``threads`` options can take turns in one process. It is
done only when the size or the CPUs change: configuring the pool restarts its workers, which
costs the next parallel call ~50 us.
"""
from __future__ import annotations

import os
import threading

from ..tvm_runtime import import_tvm

#: TVM's affinity mode kSpecifyThreadShareAllCore: every thread may run on any of the CPUs given
_SHARE_CPUS = -3

_configured = threading.local()  # .pool: (threads, cpus) the calling thread's pool has


def cpus() -> list[int]:
    """The CPUs this process may run on (its CPU affinity)."""
    return sorted(os.sched_getaffinity(0))


def size(threads: int) -> int:
    """The threads for a ``threads`` option: 0 means one per CPU this process may run on."""
    return threads or len(cpus())


def use(threads: int) -> None:
    """Size the calling thread's pool to :func:`size` (``threads``) threads, sharing this
    process's CPUs (at most one thread per CPU, and at most ``TVM_NUM_THREADS`` when set)."""
    wanted = (size(threads), tuple(cpus()))
    if getattr(_configured, "pool", None) == wanted:
        return
    tvm = import_tvm()
    os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))  # read when a pool is created
    tvm.get_global_func("runtime.config_threadpool")(_SHARE_CPUS, wanted[0], [str(c) for c in wanted[1]])
    _configured.pool = wanted
