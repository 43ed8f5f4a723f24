"""The gate's verdicts on synthetic rounds: what it cancels (a uniformly slower machine, one
disturbed pass) and what it catches (a slower kernel)."""

import numpy as np
import pytest

from pytest_quantbench import gate, storage
from pytest_quantbench.record import Measurement
from pytest_quantbench.throughput import PROBE, tag

KERNEL_S = 2.0e-3  # seconds per call of the kernel, and of the probe
PROBE_S = 2.8e-3


def _run(seed: int, kernel: float = 1.0, probe: float = 1.0, passes: int = 3,
         disturbed: dict[int, tuple[float, float]] | None = None) -> list[Measurement]:
    """Rounds of one kernel and the probe in ``passes`` passes: lognormal noise of 2 %, times
    ``kernel`` / ``probe``; ``disturbed[w] = (k, p)`` multiplies pass w's rounds further."""
    rng = np.random.default_rng(seed)
    out = []
    for w in range(passes):
        dk, dp = (disturbed or {}).get(w, (1.0, 1.0))
        k = KERNEL_S * kernel * dk * np.exp(rng.normal(0, 0.02, 400))
        p = PROBE_S * probe * dp * np.exp(rng.normal(0, 0.02, 300))
        out.append(Measurement(tag(op="dequantize", fmt="Q4_K", size="16M", impl="mine", weights=1 << 24, nbytes=1,
                                   threads=None, pass_no=w), list(k)))
        out.append(Measurement(tag(op="copyto", fmt="-", size="16M", impl=PROBE, weights=1 << 24, nbytes=1,
                                   threads=1, pass_no=w), list(p)))
    return out


def _verdict(current: list[Measurement], pct: float = 5) -> gate.Verdict:
    verdicts, problems = gate.compare(storage.snapshot(_run(seed=0)), current, pct)
    assert problems == []
    (v,) = verdicts
    return v


def test_unchanged_code_passes():
    v = _verdict(_run(seed=1))
    assert v.verdict == "same" and not v.fails
    assert v.low <= 1 <= v.high or abs(v.ratio - 1) < 0.01


@pytest.mark.parametrize("slower", [1.1, 1.25, 2.0])
def test_a_slower_kernel_fails(slower):
    v = _verdict(_run(seed=1, kernel=slower))
    assert v.verdict == "slower" and v.fails
    assert v.ratio == pytest.approx(slower, rel=0.03)
    assert v.low > 1


@pytest.mark.parametrize("machine", [1.2, 1.5, 0.8])
def test_a_uniformly_slower_or_faster_machine_does_not_fail(machine):
    v = _verdict(_run(seed=1, kernel=machine, probe=machine))
    assert not v.fails
    assert abs(v.ratio - 1) <= gate.PROBE_BAND + 0.01


def test_a_slower_kernel_on_a_slower_machine_still_fails():
    v = _verdict(_run(seed=1, kernel=1.2 * 1.25, probe=1.2))
    assert v.fails and v.ratio > 1.2


def test_small_probe_changes_are_not_corrected_for():
    """The probe moving by less than PROBE_BAND is taken as its own noise."""
    assert gate.probe_correction(1.02, 0.03) == 1.0
    assert gate.probe_correction(0.98, 0.03) == 1.0
    assert gate.probe_correction(1.2, 0.03) == pytest.approx(1.2 / 1.03)
    assert gate.probe_correction(0.8, 0.03) == pytest.approx(0.8 * 1.03)
    v = _verdict(_run(seed=1, kernel=1.0, probe=1.025))
    assert v.ratio == pytest.approx(1.0, abs=0.01)


def test_one_disturbed_pass_does_not_decide_the_verdict():
    """A neighbour that doubles the probe's time (or the kernel's) for one pass out of three."""
    for disturbed in ({1: (1.0, 2.0)}, {0: (2.0, 1.0)}, {2: (1.5, 1.5)}):
        v = _verdict(_run(seed=2, disturbed=disturbed))
        assert not v.fails, disturbed
        assert v.ratio == pytest.approx(1.0, abs=0.02), disturbed


def test_the_threshold_leaves_a_small_significant_slowdown_alone():
    v = _verdict(_run(seed=1, kernel=1.03), pct=5)
    assert v.low > 1 and not v.fails


def test_a_run_stored_with_the_old_window_tag_is_read_pass_by_pass(tmp_path):
    snap = storage.snapshot(_run(seed=0, disturbed={1: (1.0, 1.3)}))
    for b in snap["benchmarks"]:
        b["info"]["window"] = b["info"].pop("pass")
    path = storage.save(tmp_path, "old", snap)
    loaded = storage.load(path)
    assert sorted(b["info"]["pass"] for b in loaded["benchmarks"]) == [0, 0, 1, 1, 2, 2]
    verdicts, problems = gate.compare(loaded, _run(seed=1), 5)
    assert problems == [] and verdicts[0].verdict == "same"


def test_the_tables_spread_is_pytest_benchmarks_own_iqr():
    from pytest_benchmark.stats import Stats

    rounds = [1.0, 2.0, 3.0, 4.0, 10.0, 11.0, 30.0]
    stats = Stats()
    for t in rounds:
        stats.update(t)
    m = Measurement({}, rounds)
    assert m.iqr == stats.iqr and m.median == stats.median == 4.0
    assert m.iqr != float(np.subtract(*np.percentile(rounds, [75, 25])))  # numpy's quartiles differ here
