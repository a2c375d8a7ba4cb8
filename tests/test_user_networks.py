"""Every target takes what ``lsnn.compiler.export`` writes (issue 13): the four architectures of
``user_models`` (stacked ALIF, a linear front end, a convolution over each step, LayerNorm between
ALIF layers), exported with symbolic and with static T and B, compiled for cpu and cortex-m4 and
compared with their PyTorch module (every ALIF layer's spikes identical, the output within the
parity tolerance), and compiled for cuda (run where a GPU is present). Per-step ops of any kind run
on Cortex-M; an op that mixes time steps runs whole there with fixed shapes, and is refused by name with open ones."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

import user_models
from lsnn import compiler
from lsnn.compiler.importer import CompileError
from lsnn.reference import ALIF, LI
from lsnn.targets.cuda.device import cuda_device
from lsnn.targets.parity import RTOL, add_probes

T, B = 30, 2
CASES = [(name, dynamic) for name in user_models.ARCHITECTURES for dynamic in (True, False)]
IDS = [f"{name}-{'dynamic' if dynamic else 'static'}" for name, dynamic in CASES]


class Reference:
    """A module's output and every ALIF layer's spikes for ``x``, by layer name."""

    def __init__(self, module: nn.Module, x: torch.Tensor):
        self.spikes = {}
        hooks = [layer.register_forward_hook(self._keep(name))
                 for name, layer in module.named_modules() if isinstance(layer, ALIF)]
        with torch.no_grad():
            self.output = module(x).numpy()
        for h in hooks:
            h.remove()

    def _keep(self, name):
        def hook(_module, _inputs, out):
            self.spikes[name] = out.numpy()
        return hook

    def check(self, outputs: dict, probes) -> float:
        """Fail unless ``outputs`` (of the model with ``probes``) match; the output's error."""
        assert {p.node for p in probes} == set(self.spikes)
        for p in probes:
            flips = int((outputs[p.Z] != self.spikes[p.node]).sum())
            assert flips == 0, f"layer {p.node}: {flips} spikes differ from the module's"
        err = float(np.abs(outputs["Y"] - self.output).max())
        assert err <= RTOL * float(np.abs(self.output).max()), f"output differs by {err}"
        return err


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return user_models.inputs(T, B)


@pytest.fixture(scope="module")
def exported(x):
    """(name, dynamic) -> (the model with its ALIF spikes as outputs, its probes, the Reference);
    each exported once."""
    cache = {}

    def get(name: str, dynamic: bool):
        if (name, dynamic) not in cache:
            module = user_models.build(name)
            model, probes = add_probes(compiler.export(module, x, dynamic=dynamic))
            cache[name, dynamic] = model, probes, Reference(module, x)
        return cache[name, dynamic]

    return get


def _compiled_matches(exported, x, name, dynamic, target):
    model, probes, ref = exported(name, dynamic)
    art = compiler.compile(model, target)
    ref.check(art.run({"x": x.numpy()}), probes)
    return art


@pytest.mark.parametrize("name, dynamic", CASES, ids=IDS)
def test_cpu_matches_module(exported, x, name, dynamic):
    _compiled_matches(exported, x, name, dynamic, "cpu")


@pytest.mark.parametrize("name, dynamic", CASES, ids=IDS)
def test_cortex_m4_matches_module(arm_toolchain, exported, x, name, dynamic):
    art = _compiled_matches(exported, x, name, dynamic, "cortex-m4")
    assert art.manifest["footprint"]["model"]["flash_bytes"] > 0


@pytest.mark.parametrize("name, dynamic", CASES, ids=IDS)
def test_cuda_compiles(nvcc, exported, x, name, dynamic):
    model, probes, ref = exported(name, dynamic)
    art = compiler.compile(model, "cuda")
    assert art.manifest["cuda"]["binaries"], "no machine code"
    if cuda_device()[0]:
        ref.check(art.run({"x": x.numpy()}), probes)


# -- ops between the layers ---------------------------------------------------------------------

class PerStepOps(nn.Module):
    """Conv over each step's features, Flatten and Reshape, Sigmoid, Tanh, Concat, Gemm, Add."""

    def __init__(self, n_in=user_models.N_IN):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(n_in, 6)
        self.gemm = nn.Linear(2 * (n_in - 2) + 6, 16)
        self.alif = ALIF(16, 8, 8, n_refractory=1, thr=0.05)
        self.readout = LI(16, 3)

    def forward(self, x):
        T, B, n = x.shape
        conv = self.flatten(self.conv(x.reshape(T * B, 1, n))).reshape(T, B, -1)
        h = torch.cat([torch.sigmoid(conv), torch.tanh(self.linear(x))], dim=-1)
        h = self.gemm(h.reshape(T * B, -1)).reshape(T, B, -1)
        z = self.alif(h + 0.5)
        return self.readout(z + z * 0.5)


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_per_step_ops_run_on_cortex_m(arm_toolchain, x, dynamic):
    torch.manual_seed(0)
    module = PerStepOps().eval()
    model, probes = add_probes(compiler.export(module, x, dynamic=dynamic))
    ops = {n.op_type for n in model.graph.node}
    assert {"Conv", "Reshape", "Sigmoid", "Tanh", "Concat", "Gemm", "Add"} <= ops, ops  # nn.Flatten: a Reshape
    Reference(module, x).check(compiler.compile(model, "cortex-m4").run({"x": x.numpy()}), probes)


class MixesTime(nn.Module):
    """An ALIF layer, then ``mix`` (an op over the time axis), then an LI readout."""

    def __init__(self, mix):
        super().__init__()
        self.alif = ALIF(user_models.N_IN, 4, 4, thr=0.05)
        self.mix = mix
        self.readout = LI(8, 2)

    def forward(self, x):
        return self.readout(self.mix(self.alif(x)))


MIXERS = {"CumSum": lambda z: torch.cumsum(z, 0), "ReduceMean": lambda z: z.mean(0, keepdim=True),
          "Transpose": lambda z: z.transpose(0, 1), "Slice": lambda z: z[1:],
          "Softmax": lambda z: torch.softmax(z, 0)}


@pytest.mark.parametrize("op", [op for op in MIXERS if op != "Slice"])
def test_op_that_mixes_time_steps_is_refused_by_name(arm_toolchain, x, op):
    """With T and B left open, an op over the time axis can run neither step by step nor whole."""
    model = compiler.export(MixesTime(MIXERS[op]).eval(), x, dynamic=True)
    node = next(n for n in model.graph.node if n.op_type == op)
    with pytest.raises(CompileError, match=rf"node '{node.name}' \({op}\) mixes time steps: its output") as e:
        compiler.compile(model, "cortex-m4")
    assert "one time step at a time" in str(e.value) and "fixed shapes" in str(e.value)
    compiler.compile(model, "cpu")  # whole sequences at once: fine


def test_op_that_mixes_time_steps_runs_whole_with_fixed_shapes(arm_toolchain, x):
    """Exported with fixed T and B, the same kind of model runs on Cortex-M as one call per batch of
    sequences (the whole-sequence mode) and gives the cpu's outputs."""
    model = compiler.export(MixesTime(MIXERS["Slice"]).eval(), x, dynamic=False)
    art = compiler.compile(model, "cortex-m4")
    assert art.manifest["layout"]["runs"] == "whole"
    got, want = art.run({"x": x.numpy()})["Y"], compiler.compile(model, "cpu").run({"x": x.numpy()})["Y"]
    assert np.allclose(got, want, rtol=RTOL, atol=1e-6), float(np.abs(got - want).max())
