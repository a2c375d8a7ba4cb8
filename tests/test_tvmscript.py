"""lsnn.targets.tvmscript: the kernels' macro lookup gives what TVM's own gives, faster."""
import time

import pytest
import tvm
from tvm.script.parser.core.parser import ScriptMacro

from lsnn.targets import tvmscript
from lsnn.targets.cpu.alif import alif_kernel
from lsnn.targets.cpu.lstm import lstm_kernel

ALIF = dict(thr=0.1, n_refractory=2, dims={"I": 5, "H": 11}, finite_weights=True, events=True, lanes=8,
            parallel=True, outputs=frozenset({"Z", "V"}), readout=frozenset({"Y"}))
LSTM = dict(dims={"I": 3, "H": 16}, vector=True, outputs=frozenset({"Y"}))


def kernels():
    return [alif_kernel(**ALIF), lstm_kernel(**LSTM), alif_kernel(**{**ALIF, "parallel": False, "lanes": 1})]


def test_the_kernels_take_the_fast_lookup():
    assert ScriptMacro._find_parser_def is tvmscript._find_parser is not tvmscript.TVM_FIND_PARSER


def test_kernels_are_the_same_with_tvms_lookup(monkeypatch):
    started = time.perf_counter()
    ours = kernels()
    fast = time.perf_counter() - started
    monkeypatch.setattr(ScriptMacro, "_find_parser_def", tvmscript.TVM_FIND_PARSER)
    started = time.perf_counter()
    theirs = kernels()
    slow = time.perf_counter() - started
    for a, b in zip(ours, theirs, strict=True):
        tvm.ir.assert_structural_equal(a, b, map_free_vars=True)
    print(f"\nthree kernels parsed in {fast:.2f} s with the frame walk, {slow:.2f} s with inspect.getouterframes")


def test_a_macro_outside_a_kernel_says_so():
    @tvmscript.T.macro
    def lone():
        pass

    with pytest.raises(RuntimeError, match="__current_script_parser__ not available"):
        lone()
