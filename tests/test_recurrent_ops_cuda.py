"""ONNX LSTM, GRU and RNN in general on the CUDA target (:mod:`lsnn.targets.cuda.recurrent`):
every recurrent case of ONNX's node tests compiles with nvcc everywhere (no GPU needed; a
missing nvcc fails in CI), and passes within its own tolerance where a CUDA device is present
(skipped otherwise, with the reason "no CUDA device")."""
import onnx_node_cases as harness
import pytest
from lsnn.compiler import compile
from lsnn.compiler.errors import CompileError
from test_compiler_cuda import FATBIN_MAGIC, needs_gpu
from test_recurrent_ops import _check, _model

CASES = {name: case for name, (family, case) in harness.cases("cpu").items() if family in harness.RECURRENT}
#: the kernel each case's node becomes: the plain LSTM's own, or the general one of its op
KERNELS = {"lstm_kernel", "lstm1_kernel", "gru_kernel", "gru1_kernel", "rnn_kernel", "rnn1_kernel"}


@pytest.fixture(autouse=True)
def needs_nvcc(nvcc):
    """Every test here compiles with nvcc (the conftest fixture: skip locally, fail in CI)."""


def test_the_recurrent_cases_are_all_there():
    ops = sorted({case.model.graph.node[0].op_type for case in CASES.values()})
    assert ops == ["GRU", "LSTM", "RNN"] and len(CASES) >= 18, sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_recurrent_node_case_compiles_for_the_gpu(name):
    art = compile(CASES[name].model, "cuda", arch="sm_90")
    (binary,) = art.manifest["cuda"]["binaries"]
    assert art.files[binary["file"]][:4] == FATBIN_MAGIC
    usage = {k: v for k, v in binary["ptxas"].items() if k in KERNELS}
    assert usage, f"no recurrent kernel among {sorted(binary['ptxas'])}"
    assert all(u["spill_stores"] == 0 and u["registers"] > 0 for u in usage.values()), usage


def test_a_layer_wider_than_a_block_is_refused_naming_the_node(monkeypatch):
    import test_recurrent_ops

    monkeypatch.setattr(test_recurrent_ops, "H_", 400)
    model, _ = _model("GRU")
    with pytest.raises(CompileError, match=r"node 'rec' \(ai.onnx::GRU\): the CUDA GRU kernel runs one thread per "
                                           r"gate column: at most 341 hidden units, not 400"):
        compile(model, "cuda")


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_recurrent_node_case_passes_on_the_gpu(name):
    outcome = harness.run_case(CASES[name], "cuda", arch=needs_gpu())
    assert outcome.kind == "pass", outcome.detail


@pytest.mark.parametrize("op,attrs", [
    ("LSTM", dict(D=2, lens=[5, 3, 0], initial=True, peepholes=True)),
    ("LSTM", dict(layout=1, input_forget=1, clip=0.8, constant=True)),
    ("GRU", dict(D=2, linear_before_reset=1, initial=True)),
    ("GRU", dict(lens=[2, 5, 4], direction="reverse")),
    ("RNN", dict(D=2, activations=["Relu", "LeakyRelu"], activation_alpha=[0.2], lens=[1, 4, 5])),
])
def test_general_forms_match_onnxruntime_on_the_gpu(op, attrs):
    arch = needs_gpu()
    _check(*_model(op, **attrs), target="cuda", arch=arch)
