"""The CPU kernels' batch loop (lsnn.targets.cpu.worklist.each): every item runs exactly once,
whatever the threads, in order on one thread; built in memory and as a shared library."""
import numpy as np
import pytest
import tvm
from tvm.script import tirx as T

from lsnn.targets.base import get_target
from lsnn.targets.cpu import threadpool
from lsnn.targets.cpu.worklist import each


def _counting_kernel(parallel: bool):
    """``Runs[i] += 1`` and ``Order[i] = Tick[0]++`` for every item ``i`` (with one thread,
    ``Order[i]`` is the position in which ``i`` was run; with more, the threads share the tick
    without a lock, and only ``Runs`` counts)."""
    @T.macro
    def visit(i, Runs, Order, Tick):
        Runs[i] = Runs[i] + 1
        Order[i] = Tick[0]
        Tick[0] = Tick[0] + 1

    @T.prim_func
    def main(runs: T.handle, order: T.handle, tick: T.handle):
        n = T.int64()
        Runs = T.match_buffer(runs, (n,), "int32")
        Order = T.match_buffer(order, (n,), "int32")
        Tick = T.match_buffer(tick, (1,), "int32")
        each(n, parallel, lambda i: visit(i, Runs, Order, Tick))

    return main


def _build(func):
    return tvm.compile(tvm.IRModule({"main": func}), get_target("cpu").tvm_target())


def _run(fn, n: int):
    runs, order, tick = np.zeros(n, np.int32), np.full(n, -1, np.int32), np.zeros(1, np.int32)
    args = [tvm.runtime.tensor(a) for a in (runs, order, tick)]
    fn["main"](*args)
    return [a.numpy() for a in args]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory):
    """The parallel kernel as built in memory and as loaded from ``model.so`` (the spin lock is
    resolved from the C library in both), and the serial one."""
    parallel = _build(_counting_kernel(True))
    path = tmp_path_factory.mktemp("worklist") / "model.so"
    parallel.export_library(str(path))
    return {"in memory": parallel, "shared library": tvm.runtime.load_module(str(path)),
            "serial": _build(_counting_kernel(False))}


@pytest.mark.parametrize("n", [1, 5, 8, 9, 64, 101])
@pytest.mark.parametrize("form", ["in memory", "shared library"])
def test_every_item_runs_once_on_one_thread_in_order(kernels, form, n):
    threadpool.use(1)
    runs, order, tick = _run(kernels[form], n)
    assert (runs == 1).all() and tick[0] == n
    assert order.tolist() == list(range(n))


@pytest.mark.parametrize("n", [1, 9, 64, 101])
@pytest.mark.parametrize("form", ["in memory", "shared library"])
def test_every_item_runs_once_on_all_threads(kernels, form, n):
    threadpool.use(0)
    for _ in range(20):  # the split changes from call to call; no item is lost or run twice
        runs, order, _ = _run(kernels[form], n)
        assert (runs == 1).all() and (order >= 0).all()


def test_the_serial_form_runs_the_items_in_order(kernels):
    runs, order, tick = _run(kernels["serial"], 13)
    assert (runs == 1).all() and order.tolist() == list(range(13)) and tick[0] == 13
    assert "pthread" not in _counting_kernel(False).script()  # C for microcontrollers: no threads
    assert "pthread_spin_lock" in _counting_kernel(True).script()

