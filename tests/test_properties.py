"""Property-based test (issue 12): random valid and invalid ``ai.lsnn`` graphs, run on every runtime.

For every generated model (tests/lsnn_graphs.py: one or two ai.lsnn nodes, maybe
a standard op before, built from the spec alone) and several input sets, each
runtime (onnxruntime, the compiled CPU target, Cortex-M under QEMU) must either
agree with the reference runtime or raise an ``LsnnError`` where the case
allows it. A crash (any other exception), a hang or a silent difference is a
failure. The examples are not shrunk: a case is counted and the test goes on,
so one run reports every kind of problem it met, each with the two ``repr``s
that rebuild it (``GraphSpec(...)``, ``FeedSpec(...)``).

Profiles (``LSNN_HYPOTHESIS_PROFILE``): ``ci`` (default; derandomized, about
three minutes on two cores) and ``long`` (random, many more examples). Each test
prints its counts (``pytest -s``) and writes them, with every problem, to a
JSON file under pytest's temporary folder.
"""
import os
import time
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from lsnn.compiler.onnx.validate import ModelError
from lsnn_graphs import (AGREE, CORTEX_M4, ERROR, ORT, FeedSpec, GraphSpec, Outcome, Tally, call, compare, cpu,
                         feed_specs, graph_specs, invalid_specs, judge, nonfinite_weights, run_case)

settings.register_profile("ci", deadline=None, derandomize=True, database=None,
                          phases=[Phase.explicit, Phase.generate], print_blob=False,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", settings.get_profile("ci"), derandomize=False)
PROFILE = os.environ.get("LSNN_HYPOTHESIS_PROFILE", "ci")
EXAMPLES = {"ci": {"valid": 120, "invalid": 300, "cortex-m": 40},
            "long": {"valid": 1000, "invalid": 3000, "cortex-m": 200}}
FEEDS_PER_MODEL = 3


def examples(test: str):
    if PROFILE not in EXAMPLES:
        raise pytest.UsageError(f"LSNN_HYPOTHESIS_PROFILE={PROFILE!r}: choose one of {', '.join(EXAMPLES)}")
    return settings(settings.get_profile(PROFILE), max_examples=EXAMPLES[PROFILE][test])


@pytest.fixture
def report(tmp_path):
    """Write a tally's counts and problems to JSON, print them, and fail on any problem."""
    def finish(tally: Tally):
        text = tally.report(tmp_path / "property-report.json")
        print("\n" + text)
        c = tally.counts
        assert c["models"] > 0 and c["checks"] > 0
        assert not (c["disagreements"] or c["crashes"] or c["hangs"]), text
    return finish


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NaN and Inf feeds, on purpose
def test_valid_models_agree_on_ort_and_cpu(report):
    """Valid models (finite weights), with finite, non-finite, empty and wrong feeds."""
    tally = Tally("valid models on ort and cpu")

    @examples("valid")
    @given(spec=graph_specs(), events=st.booleans(), data=st.data())
    def case(spec, events, data):
        run_case(tally, spec, [data.draw(feed_specs(spec)) for _ in range(FEEDS_PER_MODEL)], [ORT, cpu(events)])

    case()
    assert tally.counts["agreements"] > tally.counts["models"]  # most cases compute: the test compares
    report(tally)


def test_invalid_models_are_rejected_everywhere(report):
    """One defect per model: every runtime raises an LsnnError; non-finite weights: every compile
    target rejects them, onnxruntime does what the reference does."""
    tally = Tally("invalid models on ort and cpu")

    @examples("invalid")
    @given(spec=invalid_specs(), data=st.data())
    def case(spec, data):
        run_case(tally, spec, [data.draw(feed_specs(spec, defective=False))], [ORT, cpu(True)])

    case()
    assert tally.counts["expected errors"] > tally.counts["models"]
    report(tally)



@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_cortex_m_agrees_or_rejects(report, arm_toolchain):
    """Fewer, smaller models on Cortex-M4 under QEMU: valid ones (fixed time dimension included)
    agree with the reference, one in four carries non-finite weights and must be rejected."""
    tally = Tally("models on cortex-m4")

    @examples("cortex-m")
    @given(spec=graph_specs(small=True), nonfinite=st.integers(0, 3), data=st.data())
    def case(spec, nonfinite, data):
        if nonfinite == 0:
            spec = replace(spec, defect=data.draw(nonfinite_weights(spec)))
        run_case(tally, spec, [data.draw(feed_specs(spec)) for _ in range(2)], [CORTEX_M4])

    case()
    report(tally)


def test_the_judge_fails_what_it_must():
    """The oracle of the tests above: silent differences, crashes and hangs are caught, rounding flips
    near threshold are not."""
    spec = GraphSpec(layers="ALIF+LI", H=2)
    T, B = 3, 1
    ref = {"Z": np.zeros((T, B, 2), np.float32), "V": np.full((T, B, 2), 0.5, np.float32),
           "Y": np.ones((T, B, 1), np.float32), "final_v": np.full((B, 2), 0.5, np.float32)}
    near = {"V": np.full((T, B, 2), 0.05, np.float32), "A": np.full((T, B, 2), 0.05 + 1e-6, np.float32)}
    far = {"V": np.full((T, B, 2), 0.5, np.float32), "A": np.full((T, B, 2), 0.05, np.float32)}

    def changed(name, index, value, out=None):
        out = {k: v.copy() for k, v in (out or ref).items()}
        out[name][index] = value
        return out

    assert compare(ref, changed("V", (1, 0, 0), 0.5 + 1e-5), spec, lambda: far) is None  # within RTOL
    assert "'V' differs at step 1" in compare(ref, changed("V", (1, 0, 0), 0.51), spec, lambda: far)
    nan_ref = changed("V", (2, 0, 1), np.nan)
    assert "'V' differs at step 2" in compare(nan_ref, ref, spec, lambda: far)  # NaN never agrees with a number
    assert compare(nan_ref, nan_ref, spec, lambda: far) is None  # but NaN agrees with NaN
    flip = changed("Y", (2, 0, 0), 7.0, changed("Z", (1, 0, 1), 1.0))
    assert compare(ref, flip, spec, lambda: near) is None  # a rounding flip, then nothing compared
    assert "'Z' differs at step 1" in compare(ref, flip, spec, lambda: far)
    hidden = {k: v for k, v in ref.items() if k != "Z"}
    y_only = changed("Y", (1, 0, 0), 2.0, hidden)
    assert compare(hidden, y_only, spec, lambda: near) is None  # Z not an output: maybe a flip
    assert "'Y' differs at step 1" in compare(hidden, y_only, spec, lambda: far)
    assert "'final_v' differs" in compare(ref, changed("final_v", (0, 1), 0.4), spec, lambda: far)
    ends_near_0 = changed("final_v", (0, 0), 1e-5)  # measured against V's scale over the run, not its own
    assert compare(ends_near_0, changed("final_v", (0, 0), 1.2e-5, ends_near_0), spec, lambda: far) is None

    tally = Tally("judge")
    feed = FeedSpec()
    for outcome in (call(lambda: int("x"), 5), call(lambda: time.sleep(2), 0.1), Outcome("ok", flip),
                    Outcome("error", ModelError("no"))):
        judge(tally, spec, feed, ORT, AGREE, outcome, Outcome("ok", ref), lambda: far)
    judge(tally, spec, feed, ORT, ERROR, Outcome("ok", ref), Outcome("error", ModelError("no")), lambda: far)
    judge(tally, spec, feed, ORT, ERROR, Outcome("error", ModelError("no")), Outcome("ok", ref), lambda: far)
    assert (tally.counts["crashes"], tally.counts["hangs"], tally.counts["disagreements"],
            tally.counts["expected errors"]) == (1, 1, 3, 1)
