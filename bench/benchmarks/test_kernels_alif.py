"""Time per call of the CPU target's ALIF and LI kernels alone, on the sMNIST LSNN's layers
(the committed checkpoint's weights when present, else a fresh model of the same size) and
840-step sequences of the task's encoding; one thread and every CPU, batch 1 and 64.

Run: ``.venv/bin/python -m pytest bench/benchmarks/test_kernels_alif.py
--benchmark-columns=median,iqr,rounds`` (not part of the test suite).
"""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from lsnn.compiler.onnx.export import export
from lsnn.targets.base import get_target
from lsnn.targets.cpu import threadpool
from lsnn.targets.parity import add_probes
from test_runtimes import _inputs, _model

BATCHES = (1, 64)


def _layers():
    """(op, attributes, constant inputs by name) of each sequence node of the sMNIST LSNN."""
    model = export(_model("smnist-lsnn", "lsnn"))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.domain == "ai.lsnn":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            out[node.op_type] = (attrs, [consts.get(name) for name in node.input])
    return model, out


@pytest.fixture(scope="module")
def layers():
    torch.set_num_threads(1)
    model, layers = _layers()
    probed, probes = add_probes(model)  # the spikes the readout reads, from the reference
    from lsnn.targets import open_runtime

    spikes = {B: open_runtime(probed, "ort").run({"X": _inputs(B)})[probes[0].Z] for B in BATCHES}
    return layers, spikes


def _kernel(op, attrs, params):
    import tvm

    target = get_target("cpu")
    f32 = lambda a: np.ascontiguousarray(a, np.float32)  # noqa: E731
    if op == "ALIF":
        W, R = params[1], params[2]
        k = target.kernel("ALIF", thr=attrs["thr"], n_refractory=attrs["n_refractory"],
                          dims={"I": W.shape[1], "H": W.shape[0]}, finite_weights=True, outputs=frozenset({"Z"}))
        consts = [f32(W.T), f32(R.T)] + [f32(p) for p in params[3:6]]
        n = W.shape[0]
    else:
        W = params[1]
        k = target.kernel("LI", dims={"I": W.shape[1], "O": W.shape[0]}, finite_weights=True,
                          outputs=frozenset({"Y"}))
        consts = [f32(W.T), f32(params[2]), f32(params[3])]
        n = W.shape[0]
    lib = tvm.tirx.build(tvm.IRModule({"main": k.with_attr("global_symbol", "main")}), target=target.tvm_target())
    return lib["main"], consts, n


@pytest.mark.parametrize("threads", [1, 0])
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", ["ALIF", "LI"])
def test_kernel_latency_per_call(benchmark, layers, op, batch, threads):
    import tvm

    (by_op, spikes) = layers
    attrs, params = by_op[op]
    fn, consts, n = _kernel(op, attrs, params)
    X = _inputs(batch) if op == "ALIF" else spikes[batch]
    T, B = X.shape[:2]
    states = 4 if op == "ALIF" else 1
    outs = 7 if op == "ALIF" else 2
    args = ([tvm.runtime.tensor(np.ascontiguousarray(X))] + [tvm.runtime.tensor(c) for c in consts] +
            [tvm.runtime.tensor(np.zeros((B, n), np.float32)) for _ in range(states)] +
            [tvm.runtime.tensor(np.zeros((T, B, n) if k < (3 if op == "ALIF" else 1) else (B, n), np.float32))
             for k in range(outs)])
    threadpool.use(threads)
    benchmark.group = f"{op} kernel, sMNIST LSNN, batch {batch}"
    benchmark.extra_info.update({"threads": threadpool.size(threads), "steps": T, "batch": B,
                                 "input_events_per_step": float((X != 0).sum() / T / B)})
    fn(*args)
    benchmark.pedantic(fn, args=args, rounds=30 if batch == 1 else 5, warmup_rounds=2)
