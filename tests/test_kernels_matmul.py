"""The CPU kernel of a product by a constant matrix (targets/cpu/matmul.py), called directly and
through the CPU pipeline's rewrite of ``MatMul`` (+ ``Add`` of a constant bias) in ONNX models."""
import numpy as np
import onnx
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper

from lsnn import compiler
from lsnn.compiler.importer import to_relax
from lsnn.targets.base import get_target
from lsnn.targets.cpu.matmul import constant_matmul_pass, matmul_kernel, padded, tile_cols


def _build(K, N, lanes=8):
    f = matmul_kernel(K=K, N=N, lanes=lanes, parallel=True)
    return tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}),
                       get_target("cpu").tvm_target())["main"]


def _run(fn, X, W, bias, lanes=8):
    K, N = W.shape
    nP = padded(N, tile_cols(N, lanes))
    wp, bp = np.zeros((K, nP), np.float32), np.zeros(nP, np.float32)
    wp[:, :N], bp[:N] = W, bias
    Y = tvm.runtime.tensor(np.full((X.shape[0], N), 1234.5, np.float32))
    fn(*(tvm.runtime.tensor(a) for a in (X, wp, bp)), Y)
    return Y.numpy()


def _assert_product(Y, X, W, bias):
    """``Y`` is ``X @ W + bias`` within float32 rounding of each sum (float64 reference)."""
    exact = X.astype(np.float64) @ W + bias
    scale = np.abs(X.astype(np.float64)) @ np.abs(W) + np.abs(bias)
    assert Y.shape == exact.shape
    np.testing.assert_array_less(np.abs(Y - exact), 1e-6 * (X.shape[1] + 2) * scale + 1e-30)


@pytest.mark.parametrize("K,N", [(128, 10), (13, 7), (5, 33), (16, 16), (1, 1)])
def test_kernel_equals_numpy_for_every_row_count(K, N):
    """One compiled kernel (symbolic row count) for row counts that are and are not whole tiles
    and chunks; sizes not multiples of the vector width; every column stored, none beyond N."""
    rng = np.random.default_rng(K * 100 + N)
    W = rng.standard_normal((K, N)).astype(np.float32)
    bias = rng.standard_normal(N).astype(np.float32)
    fn = _build(K, N)
    for rows in (1, 3, 4, 5, 63, 64, 67, 130):
        X = rng.standard_normal((rows, K)).astype(np.float32)
        _assert_product(_run(fn, X, W, bias), X, W, bias)


def test_avx512_tiles_equal_numpy():
    rng = np.random.default_rng(1)
    W, bias = rng.standard_normal((20, 37)).astype(np.float32), rng.standard_normal(37).astype(np.float32)
    X = rng.standard_normal((9, 20)).astype(np.float32)
    # 16 lanes built for this machine's CPU run as two AVX2 halves where AVX-512 is missing
    _assert_product(_run(_build(20, 37, lanes=16), X, W, bias, lanes=16), X, W, bias)


def test_nan_and_inf_propagate_as_numpy():
    rng = np.random.default_rng(2)
    K, N = 12, 10
    W = rng.standard_normal((K, N)).astype(np.float32)
    W[3, 4] = 0.0
    bias = rng.standard_normal(N).astype(np.float32)
    X = rng.standard_normal((6, K)).astype(np.float32)
    X[0, 1] = np.nan
    X[2, 3] = np.inf     # times W[3, 4] == 0: NaN in column 4, +-Inf elsewhere
    X[4, 0] = -np.inf
    Y = _run(_build(K, N), X, W, bias)
    with np.errstate(invalid="ignore"):
        expected = X @ W + bias
    np.testing.assert_array_equal(np.isnan(Y), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(Y), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(Y), np.isneginf(expected))
    assert np.isnan(Y[2, 4]) and np.isnan(Y[0]).all()


def _readout_model(K, N, bias_shape=(None,), weight_input=False):
    """``Y = X @ W (+ b)``, ``X`` of shape [T, B, K] with T and B symbolic."""
    rng = np.random.default_rng(3)
    W = rng.standard_normal((K, N)).astype(np.float32)
    inits = [] if weight_input else [numpy_helper.from_array(W, "W")]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", K])]
    if weight_input:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [K, N]))
    nodes = [helper.make_node("MatMul", ["X", "W"], ["P"])]
    b = None
    if bias_shape is not None:
        b = rng.standard_normal([N if d is None else d for d in bias_shape]).astype(np.float32)
        inits.append(numpy_helper.from_array(b, "b"))
        nodes.append(helper.make_node("Add", ["P", "b"], ["Y"]))
    out = "Y" if bias_shape is not None else "P"
    graph = helper.make_graph(nodes, "readout", inputs,
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), W, b, out


def _ops(mod) -> str:
    return mod["main"].script(show_meta=False)


def test_pass_replaces_matmul_and_bias_by_one_kernel_call():
    model, *_ = _readout_model(128, 10)
    mod = constant_matmul_pass(8, True)(to_relax(model, get_target("cpu")))
    text = _ops(mod)
    assert "R.matmul" not in text and "R.add" not in text and "matmul_const_128x10" in text


def test_bias_along_other_axes_stays_a_separate_add():
    model, *_ = _readout_model(128, 10, bias_shape=(3, 1, 1))
    text = _ops(constant_matmul_pass(8, True)(to_relax(model, get_target("cpu"))))
    assert "R.matmul" not in text and "R.add" in text and "matmul_const_128x10" in text


@pytest.mark.parametrize("bias_shape", [(None,), (1, 1, None), (1,), None],
                         ids=["vector", "leading-ones", "scalar", "none"])
def test_compiled_readout_equals_numpy(bias_shape):
    """Through lsnn.compiler.compile for cpu, T and B symbolic (two shapes, one artifact)."""
    K, N = 20, 11
    model, W, b, out = _readout_model(K, N, bias_shape)
    art = compiler.compile(model, "cpu", threads=2)
    rng = np.random.default_rng(4)
    for shape in ((3, 1, K), (3, 5, K)):
        X = rng.standard_normal(shape).astype(np.float32)
        Y = art.run({"X": X}, [out])
        Y = Y[out] if isinstance(Y, dict) else Y[0]
        expected = X.astype(np.float64) @ W + (0 if b is None else b)
        np.testing.assert_allclose(Y, expected, rtol=1e-5, atol=1e-5)


def test_weight_given_at_run_time_keeps_tvm_lowering():
    model, *_ = _readout_model(8, 3, weight_input=True)
    mod = constant_matmul_pass(8, True)(to_relax(model, get_target("cpu")))
    assert "R.matmul" in _ops(mod) and "matmul_const" not in _ops(mod)
