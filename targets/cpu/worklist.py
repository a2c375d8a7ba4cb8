"""The kernels' batch loop on the runtime's thread pool: items handed out one at a time.

TVM's parallel loop gives each thread a fixed share of the iterations, so a
call lasts as long as its slowest thread. On a shared host one vCPU that is
held up for a while (another tenant, a worker that was asleep) makes the whole
call wait with the other core idle. :func:`each` instead lets every thread
take the next item from a queue the call shares, until none is left: a thread
that is held up takes fewer, and the batch ends when the last item ends.

The queue is a counter behind a POSIX spin lock, taken once per item (tens of
nanoseconds against a sequence's hundreds of microseconds). TVM 0.27's CPU
code generator has no atomic instructions (``tirx.atomic_add`` fails to build),
and the C library's spin lock needs nothing beyond that library, which every
process has loaded: the in-memory JIT and ``model.so`` resolve it alike.

Items are handed out in order: with one thread, the batch runs as a serial
loop would. Items do not share state, so which thread runs which item changes
no result.
"""
from __future__ import annotations

from ..tvmscript import T


@T.macro
def _spin(name, lock):
    T.evaluate(T.call_extern("int32", name, T.address_of(lock[0])))


@T.macro
def _take(queue, item):
    """``item[0]``: the queue's next item (``queue[1]``), advanced under the lock ``queue[0]``.
    The lock calls are given the buffer itself, so the compiler keeps the counter's load and
    store between them."""
    _spin("pthread_spin_lock", queue)
    item[0] = queue[1]
    queue[1] = queue[1] + 1
    _spin("pthread_spin_unlock", queue)


@T.macro
def each(n, parallel, body):
    """``body(i)`` for every ``i < n`` (int64). ``body`` is called once, at parse time, to write
    the loop's body (a macro or a function calling one: ``lambda b: sequence(b, X, ...)``).
    ``parallel``: on the runtime's thread pool, each thread taking the next item when it is
    free; otherwise one serial loop in order (for code generators without threads)."""
    if parallel:
        queue = T.alloc_buffer((2,), "int32")  # [0]: a pthread_spinlock_t (an int), [1]: the next item
        T.evaluate(T.call_extern("int32", "pthread_spin_init", T.address_of(queue[0]), 0))  # process-private
        queue[1] = 0
        for _task in T.parallel(n):  # n tasks: each thread's first takes items until none is left
            item = T.alloc_buffer((1,), "int32")
            _take(queue, item)
            while T.Cast("int64", item[0]) < n:
                body(T.Cast("int64", item[0]))
                _take(queue, item)
    else:
        for i in range(n):
            body(i)
