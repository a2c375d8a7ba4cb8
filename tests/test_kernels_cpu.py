"""The CPU kernels of ALIF and LI: outputs the graph does not read are not computed, the vector
loops give what the scalar ones give (NaN and Inf included), and the batch split across threads
gives what one thread gives."""
import os
import re

import numpy as np
import onnx
import pytest
import tvm
from onnx import helper

from lsnn import compiler
from lsnn.compiler.importer import OUTPUTS_READ, to_relax, with_outputs_read
from lsnn.compiler.onnx.export import export
from lsnn.targets import load, open_runtime
from lsnn.targets.base import TargetError, get_target
from lsnn.targets.cpu import LANES, CpuTarget, threadpool
from lsnn.targets.cpu.alif import alif_kernel
from lsnn.targets.cpu.li import li_kernel
from lsnn.targets.parity import add_probes
from model_variants import hand_built, small, spikes

ALIF_OUTPUTS = frozenset({"Z", "V", "A", "final_v", "final_a", "final_z", "final_r"})


def stored_buffers(func) -> set[str]:
    """The names of the buffers a TIR function stores to (from its script: ``NAME[...] = ...``)."""
    return set(re.findall(r"^\s*(\w+)\[[^\n]*\] = ", func.script(), re.MULTILINE))


def test_alif_kernel_stores_only_the_outputs_read():
    build = dict(thr=0.1, n_refractory=2, dims={"I": 5, "H": 11}, finite_weights=True, events=True, lanes=LANES)
    assert {"V", "A", "FV", "FA", "FZ", "FR"}.isdisjoint(stored_buffers(alif_kernel(outputs=frozenset({"Z"}), **build)))
    assert {"Z", "V", "FZ"} <= stored_buffers(alif_kernel(outputs=frozenset({"Z", "V", "final_z"}), **build)) \
        and {"A", "FV"}.isdisjoint(stored_buffers(alif_kernel(outputs=frozenset({"Z", "V", "final_z"}), **build)))
    li = dict(dims={"I": 11, "O": 3}, finite_weights=True)
    assert "FY" not in stored_buffers(li_kernel(outputs=frozenset({"Y"}), **li))
    assert {"Y", "FY"} <= stored_buffers(li_kernel(outputs=frozenset({"Y", "final_y"}), **li))


class Recording(CpuTarget):
    """The CPU target, noting the ``outputs`` (and a fused readout's) each kernel is built for."""

    def __init__(self, **options):
        super().__init__(**options)
        self.seen = []

    def kernel(self, op, *, outputs=None, **attrs):
        self.seen.append((op, outputs) + ((attrs["readout"],) if "readout" in attrs else ()))
        return super().kernel(op, outputs=outputs, **attrs)


class Separate(Recording):
    """The CPU target without the ALIF+LI kernel: each layer its own kernel."""

    def fuses_readout(self) -> bool:
        return False


def _without_output(model, name):
    kept = [o for o in model.graph.output if o.name != name]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return model


def test_importer_tells_each_kernel_the_outputs_the_graph_reads():
    model = export(small("lsnn"))
    target = Separate()
    to_relax(model, target)
    assert target.seen == [("ALIF", frozenset({"Z"})), ("LI", frozenset({"Y"}))]
    probed, _ = add_probes(model)
    target = Separate()
    to_relax(probed, target)
    assert target.seen == [("ALIF", frozenset({"Z", "V", "A"})), ("LI", frozenset({"Y"}))]


def test_an_alif_layer_and_its_readout_become_one_kernel_that_stores_z_only_when_read_elsewhere():
    model = export(small("lsnn"))
    for graph, seen in ((model, ("ALIF+LI", frozenset({"Z"}), frozenset({"Y"}))),
                        (add_probes(model)[0], ("ALIF+LI", frozenset({"Z", "V", "A"}), frozenset({"Y"}))),
                        (_without_output(export(small("lsnn")), "Z"), ("ALIF+LI", frozenset(), frozenset({"Y"}))),
                        (export(small("lsnn"), streaming=True),
                         ("ALIF+LI", frozenset(n for n in ALIF_OUTPUTS if n[0] in "Zf"), frozenset({"Y", "final_y"})))):
        target = Recording()
        to_relax(graph, target)
        assert target.seen == [seen]
    assert "Z" not in stored_buffers(alif_kernel(outputs=frozenset(), readout=frozenset({"Y"}), thr=0.1, n_refractory=2,
                                                 dims={"I": 5, "H": 11, "O": 3}, finite_weights=True, events=True))


def _without_bias(model):
    readout = model.graph.node[-1]
    assert readout.op_type == "LI"
    del readout.input[3:]
    return model


@pytest.mark.parametrize("variant", ["outputs", "streaming", "z unread", "hand-built", "lif"])
def test_fused_readout_gives_what_separate_kernels_give_bit_for_bit(variant):
    """Z a graph output or not, initial states as inputs and final states read, an LI without
    bias written from the spec, a LIF-only layer."""
    model = {"outputs": lambda: export(small("lsnn")), "streaming": lambda: export(small("lsnn"), streaming=True),
             "z unread": lambda: _without_output(export(small("lsnn")), "Z"),
             "hand-built": lambda: _without_bias(hand_built()[0]), "lif": lambda: export(small("lif"))}[variant]()
    rng = np.random.default_rng(2)
    feeds = {i.name: rng.normal(0, 0.3, [d.dim_value or 5 for d in i.type.tensor_type.shape.dim]).astype(np.float32)
             for i in model.graph.input[1:]}  # initial states, batch 5
    I = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    feeds[model.graph.input[0].name] = spikes(T=90, B=5, I=I, p=0.3)
    fused, separate = Recording(), Separate()
    got = [compiler.compile(model, t).run(feeds) for t in (fused, separate)]
    assert [s[0] for s in fused.seen] == ["ALIF+LI"] and [s[0] for s in separate.seen] == ["ALIF", "LI"]
    assert got[0]["Y"].any() and set(got[0]) == set(got[1])
    for name in got[0]:
        np.testing.assert_array_equal(got[0][name], got[1][name], err_msg=name)


def test_outputs_read_by_a_node_or_a_subgraph_count_and_unnamed_or_unused_ones_do_not():
    model, _ = hand_built()
    alif = model.graph.node[0]
    alif.output.extend(["V", "", "fv"])  # V read by a node, A unnamed, final_v read by nothing
    model.graph.node.append(helper.make_node("Neg", ["V"], ["negV"]))
    marked = with_outputs_read(model.graph)
    mask = {a.name: a.i for a in marked.node[0].attribute}[OUTPUTS_READ]
    assert mask == 0b011  # Z and V
    branch = helper.make_graph([helper.make_node("Identity", ["fv"], ["out"])], "branch", [],
                               [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)])
    model.graph.node.append(helper.make_node("If", ["cond"], ["o"], then_branch=branch, else_branch=branch))
    mask = {a.name: a.i for a in with_outputs_read(model.graph).node[0].attribute}[OUTPUTS_READ]
    assert mask == 0b1011  # final_v is read inside the If's branches


def test_compiled_v_and_a_equal_the_reference_when_read():
    probed, probes = add_probes(export(small("lsnn")))
    art = compiler.compile(probed, "cpu")
    X = spikes(T=60, B=3)
    ref = open_runtime(probed, "torch").run({"X": X})
    got = art.run({"X": X})
    p = probes[0]
    assert np.array_equal(got[p.Z], ref[p.Z]) and ref[p.Z].sum() > 0
    for name in (p.V, p.A):
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-5)


def _call(func, arrays, out_shapes):
    lib = tvm.tirx.build(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}),
                         target=get_target("cpu").tvm_target())
    args = [tvm.runtime.tensor(a) for a in arrays] + [tvm.runtime.tensor(np.zeros(s, np.float32)) for s in out_shapes]
    lib["main"](*args)
    return [a.numpy() for a in args[len(arrays):]]


@pytest.mark.parametrize("H, static", [(21, True), (30, True), (3, False), (29, False)])
def test_vector_alif_and_li_kernels_equal_the_scalar_ones_bit_for_bit(H, static):
    """Tails (H not a multiple of the lanes: with 16 lanes 30 = 16 + 8 + 4 + 2 and 29 with a
    symbolic size), symbolic sizes, NaN and Inf in inputs and state; 8 lanes (AVX2) and 16
    (AVX-512, what this machine's CPU target uses when it has it)."""
    rng = np.random.default_rng(H)
    T, B, I = 40, 3, 5
    X = (rng.random((T, B, I)) < 0.3).astype(np.float32)
    X[2, 0, 1], X[5, 1, 3], X[7, 2, 0] = np.nan, np.inf, -np.inf
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    params = [f32(rng.normal(0, 1, (I, H))), f32(rng.normal(0, 0.4, (H, H))), f32(rng.uniform(0, 2, H)),
              f32(rng.uniform(0.8, 1, H)), f32(rng.uniform(0.9, 1, H))]
    state = [f32(rng.normal(0, 0.1, (B, H))) for _ in range(2)] + [f32(rng.random((B, H)) < 0.3), np.zeros((B, H), np.float32)]
    state[0][1, H - 1] = np.nan
    dims = {"I": I, "H": H} if static else {}
    shapes = [(T, B, H)] * 3 + [(B, H)] * 4
    readout_params = [f32(rng.normal(0, 1, (H, 3))), f32(np.full(3, 0.9)), f32(rng.normal(0, 0.1, 3)), f32(np.zeros((B, 3)))]
    got = {}
    for lanes, parallel in ((1, False), (LANES, True), (16, True)):
        k = alif_kernel(thr=0.05, n_refractory=2, dims=dims, finite_weights=True, events=True,
                        outputs=ALIF_OUTPUTS, lanes=lanes, parallel=parallel)
        alif = _call(k, [X] + params + state, shapes)
        li = li_kernel(dims={"I": H, "O": 3} if static else {}, finite_weights=True, outputs=frozenset({"Y", "final_y"}),
                       lanes=lanes, parallel=parallel)
        got[lanes] = alif + _call(li, [alif[0]] + readout_params, [(T, B, 3), (B, 3)])
    assert got[1][0].sum() > 0 and np.isnan(got[1][1]).any()
    for lanes in (LANES, 16):
        for scalar, vector in zip(got[1], got[lanes]):
            np.testing.assert_array_equal(vector, scalar)


def test_threads_option_is_checked_recorded_and_applied(tmp_path):
    with pytest.raises(TargetError, match=r"target 'cpu': option threads=-1: must be 0 \(all cores\) or a positive"):
        get_target("cpu", threads=-1)
    with pytest.raises(TargetError, match=r"option threads='two' is not an integer"):
        get_target("cpu", threads="two")
    assert get_target("cpu").options["threads"] == 0
    model = export(small("lsnn"))
    art = compiler.compile(model, "cpu", threads=2)
    assert art.manifest["target"]["options"]["threads"] == 2
    X = spikes(T=20, B=4)
    num_threads = tvm.get_global_func("runtime.NumThreads")
    many = min(2, len(threadpool.cpus()))  # at most one thread per CPU the test may use
    affinity = os.sched_getaffinity(0)
    art.run({"X": X})
    assert num_threads() == many
    compiler.compile(model, "cpu", threads=1).run({"X": X})
    assert num_threads() == 1
    art.save(tmp_path / "art")
    loaded = load(tmp_path / "art")
    loaded.run({"X": X})
    assert loaded.manifest["target"]["options"]["threads"] == 2 and num_threads() == many
    assert os.sched_getaffinity(0) == affinity  # TVM pins the caller to the CPUs it was given: these


def test_batch_split_across_threads_gives_what_one_thread_gives():
    model = export(small("lsnn"))
    X = spikes(T=80, B=9, p=0.3)
    one = compiler.compile(model, "cpu", threads=1).run({"X": X})
    many = compiler.compile(model, "cpu", threads=4).run({"X": X})
    assert one["Z"].sum() > 0
    for name in one:
        np.testing.assert_array_equal(many[name], one[name])
