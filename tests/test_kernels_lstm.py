"""The CPU LSTM kernel (targets/cpu/lstm.py) called directly: the dense and event-driven input
projections, the batch in groups and tiles, threads, the C form (vector=False) and dead outputs."""
from typing import NamedTuple

import numpy as np
import pytest
import tvm

from lsnn.targets.base import get_target
from lsnn.targets.cpu import lstm as cpu_lstm
from lsnn.targets.cpu.lstm import DENSE_FRACTION, OUTPUTS, lstm_kernel, recurrent_layout

SENTINEL = 1234.5


class Kernel(NamedTuple):
    fn: object       # the compiled kernel
    layout: dict     # the settings R^T's layout depends on (recurrent_layout's keywords)


def _build(I, H, outputs=OUTPUTS, **settings):
    settings = {"vector": True, **settings}
    f = lstm_kernel(dims={"I": I, "H": H}, outputs=outputs, **settings)
    fn = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), get_target("cpu").tvm_target())
    return Kernel(fn["main"], settings)


def _weights(I, H, seed=0):
    rng = np.random.default_rng(seed)
    W, R = (rng.normal(0, 0.3, (4 * H, n)).astype(np.float32) for n in (I, H))
    return W, R, rng.normal(0, 0.3, 4 * H).astype(np.float32)


def _run(kernel, X, W, R, bias, h0=None, c0=None):
    """Y, Y_h, Y_c of the kernel, given ``R^T`` in its layout; outputs it does not store keep
    SENTINEL."""
    Tn, B, _ = X.shape
    H = R.shape[1]
    h0 = np.zeros((B, H), np.float32) if h0 is None else h0
    c0 = np.zeros((B, H), np.float32) if c0 is None else c0
    args = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in
            (X, W.T, recurrent_layout(R.T, **kernel.layout), bias, h0, c0, np.full((Tn, B, H), SENTINEL, np.float32),
             np.full((B, H), SENTINEL, np.float32), np.full((B, H), SENTINEL, np.float32))]
    kernel.fn(*args)
    return [a.numpy() for a in args[6:]]


def _reference(X, W, R, bias):
    """ONNX LSTM in float64 (exact tanh and sigmoid)."""
    H = R.shape[1]
    h = np.zeros((X.shape[1], H))
    c = np.zeros_like(h)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    Y = []
    with np.errstate(invalid="ignore", over="ignore"):
        for x in X.astype(np.float64):
            g = x @ W.T + h @ R.T + bias
            c = sig(g[:, 2 * H:3 * H]) * c + sig(g[:, :H]) * np.tanh(g[:, 3 * H:])
            h = sig(g[:, H:2 * H]) * np.tanh(c)
            Y.append(h)
    return np.stack(Y), h, c


def _inputs(Tn, B, I, density, seed=1):
    rng = np.random.default_rng(seed)
    if density is None:  # real-valued, dense
        return rng.normal(0, 1, (Tn, B, I)).astype(np.float32)
    return (rng.random((Tn, B, I)) < density).astype(np.float32)


@pytest.fixture(scope="module", params=[8, 16], ids=["avx2", "avx512"])
def kernel(request):
    """H = 16 in blocks of 8 units and tiles of 2 sequences (AVX2's lanes), or in one block of 16
    units and tiles of 4 sequences (AVX-512's); LLVM splits vectors wider than the machine's."""
    return _build(12, 16, lanes=request.param)


@pytest.mark.parametrize("density", [0.04, 1 / DENSE_FRACTION + 0.1, None], ids=["spikes", "above-threshold", "dense"])
def test_both_projections_equal_the_reference(kernel, density):
    W, R, bias = _weights(12, 16)
    X = _inputs(70, 3, 12, density)
    Y, Yh, Yc = _run(kernel, X, W, R, bias)
    rY, rh, rc = _reference(X, W, R, bias)
    np.testing.assert_allclose(Y, rY, atol=2e-6)
    np.testing.assert_allclose(Yh, rh, atol=2e-6)
    np.testing.assert_allclose(Yc, rc, atol=2e-5)


def test_dense_and_event_driven_chunks_in_one_call_give_the_same_sums():
    """Chunks (64 rows: 64 steps at batch 1) of spikes and of dense inputs alternate; each
    sequence, scaled to spikes only, gives what the same steps give alone."""
    fn = _build(12, 16)
    W, R, bias = _weights(12, 16)
    X = _inputs(256, 1, 12, 0.04)
    X[64:128] = _inputs(64, 1, 12, None)
    X[192:] = _inputs(64, 1, 12, 0.9)
    Y = _run(fn, X, W, R, bias)[0]
    np.testing.assert_allclose(Y, _reference(X, W, R, bias)[0], atol=2e-6)
    # the sparse path skips exactly the zero terms the dense path adds: the same sums
    Xd = X.copy()
    Xd[:64] = 0
    Xd[:64, :, 0] = 1  # one nonzero per step: event-driven, then the same dense chunk
    np.testing.assert_allclose(_run(fn, Xd, W, R, bias)[0], _reference(Xd, W, R, bias)[0], atol=2e-6)


@pytest.mark.parametrize("density", [0.04, None], ids=["spikes", "dense"])
def test_a_batch_gives_each_sequence_what_it_gives_alone(kernel, density):
    """11 sequences: a group of 8 (tiles of 2 or 4 sequences) and one of 3 (a tile of 2 and a
    single row, or single rows), chunks of 8 and 21 steps; each equals its batch-1 run bit for bit
    (same sums in the same order)."""
    W, R, bias = _weights(12, 16)
    X = _inputs(45, 11, 12, density)
    Y, Yh, Yc = _run(kernel, X, W, R, bias)
    for b in range(11):
        y, yh, yc = _run(kernel, X[:, b:b + 1], W, R, bias)
        assert np.array_equal(Y[:, b:b + 1], y) and np.array_equal(Yh[b], yh[0]) and np.array_equal(Yc[b], yc[0]), b


def test_threads_give_what_one_thread_gives(kernel):
    W, R, bias = _weights(12, 16)
    X = _inputs(30, 19, 12, None)
    pool = tvm.get_global_func("runtime.config_threadpool")
    try:
        pool(1, 1)
        one = _run(kernel, X, W, R, bias)
        pool(1, 2)
        two = _run(kernel, X, W, R, bias)
    finally:
        pool(1, 0)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def test_the_c_form_gives_what_the_vector_form_gives():
    """vector=False (serial loops, one step per chunk: the kernel Cortex-M renders to C) and the
    blocked kernel, at an H whose 4H no vector tile divides (tiles of 4 gates)."""
    W, R, bias = _weights(5, 5)
    X = _inputs(20, 3, 5, None)
    X[3, 1, 2], X[7, 0, 4] = np.nan, np.inf
    vec, c_form = _run(_build(5, 5), X, W, R, bias), _run(_build(5, 5, vector=False), X, W, R, bias)
    for a, b in zip(vec, c_form):
        np.testing.assert_array_equal(a, b)
    assert np.isnan(vec[0][3:, 1]).all() and not np.isnan(vec[0][:3]).any()


def test_state_continues_a_sequence(kernel):
    W, R, bias = _weights(12, 16)
    X = _inputs(40, 5, 12, None)
    Y, Yh, Yc = _run(kernel, X, W, R, bias)
    Y1, h1, c1 = _run(kernel, X[:17], W, R, bias)
    Y2, h2, c2 = _run(kernel, X[17:], W, R, bias, h1, c1)
    assert np.array_equal(np.concatenate([Y1, Y2]), Y) and np.array_equal(h2, Yh) and np.array_equal(c2, Yc)


@pytest.mark.parametrize("outputs", [{"Y_h"}, {"Y", "Y_c"}, set()])
def test_dead_outputs_are_not_stored(outputs):
    fn = _build(12, 16, outputs=frozenset(outputs))
    W, R, bias = _weights(12, 16)
    X = _inputs(30, 9, 12, 0.3)
    got = dict(zip(("Y", "Y_h", "Y_c"), _run(fn, X, W, R, bias)))
    full = dict(zip(("Y", "Y_h", "Y_c"), _run(_build(12, 16), X, W, R, bias)))
    for name, value in got.items():
        if name in outputs:
            assert np.array_equal(value, full[name]), name
        else:
            assert (value == SENTINEL).all(), f"{name} is not read but was stored"


@pytest.mark.parametrize("H, lanes, units", [(128, 16, 16), (128, 8, 8), (20, 16, 4), (5, 8, 1)])
def test_the_recurrent_layout_puts_a_blocks_gates_in_one_run(H, lanes, units):
    rt = np.arange(H * 4 * H, dtype=np.float32).reshape(H, 4 * H)
    blocked = recurrent_layout(rt, vector=True, lanes=lanes)
    assert blocked.shape == (H // units, H, 4, units) and blocked.flags.c_contiguous
    u, k, g, j = H // units - 1, H - 1, 2, units - 1
    assert blocked[u, k, g, j] == rt[k, g * H + u * units + j]
    assert np.array_equal(np.sort(blocked.ravel()), rt.ravel())


def test_unknown_output_is_named():
    with pytest.raises(ValueError, match=r"LSTM kernel: unknown output\(s\) \['Z'\]"):
        lstm_kernel(dims={"I": 2, "H": 2}, vector=True, outputs=frozenset({"Y", "Z"}))


def test_the_importer_passes_the_outputs_the_graph_reads(monkeypatch):
    """A model whose graph reads only the LSTM's final h: the kernel is asked for Y_h alone, and
    the compiled model gives onnxruntime's result."""
    from onnx import TensorProto, helper, numpy_helper

    from lsnn import compiler
    from lsnn.targets import open_runtime

    H, I = 6, 4
    W, R, bias = _weights(I, H)
    graph = helper.make_graph(
        [helper.make_node("LSTM", ["X", "W", "R", "B"], ["", "Y_h"], hidden_size=H)], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", 2, I])],
        [helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [1, 2, H])],
        [numpy_helper.from_array(W[None], "W"), numpy_helper.from_array(R[None], "R"),
         numpy_helper.from_array(np.concatenate([bias, np.zeros_like(bias)])[None], "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    asked = []

    def spy(**kw):
        asked.append(kw["outputs"])
        return lstm_kernel(**kw)

    monkeypatch.setattr(cpu_lstm, "lstm_kernel", spy)
    art = compiler.compile(model, "cpu")
    assert asked == [frozenset({"Y_h"})]
    X = _inputs(25, 2, I, None)
    np.testing.assert_allclose(art.run({"X": X})["Y_h"], open_runtime(model, "ort").run({"X": X})["Y_h"],
                               atol=1e-5)
