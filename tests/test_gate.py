"""The gate's verdicts on synthetic rounds: what it cancels (a uniformly slower machine, a
disturbance that hits a kernel round and the probes around it, one lucky baseline run) and what it
catches (a slower kernel), against stored baselines and in A/B."""

import json

import numpy as np
import pytest

from pytest_quantbench import gate, storage
from pytest_quantbench.findings import Measurement
from pytest_quantbench.table import PROBE, tag

KERNEL_S = 2.0e-3  # seconds per call of the kernel, and of the probes
PROBE_S = 2.8e-3
ROUNDS = 300


def _host(rng: np.random.Generator, n: int, disturbed: float = 0.0) -> np.ndarray:
    """How slow the host is at each of ``n`` moments: 1, times ``1 + disturbed`` for a third of them
    (a neighbour), times a slow drift."""
    host = np.ones(n) * np.linspace(1.0, 1.02, n)
    host[n // 3: 2 * n // 3] *= 1 + disturbed
    return host


def _run(seed: int, kernel: float = 1.0, machine: float = 1.0, passes: int = 3, disturbed: float = 0.0,
         paired: bool = True) -> list[Measurement]:
    """One kernel's rounds and the probes' in ``passes`` passes: each round and the paired probe
    calls around it see the same host (:func:`_host`, times ``machine``), plus 2 % lognormal noise
    of their own; the kernel's own time is ``kernel`` times its usual."""
    rng = np.random.default_rng(seed)
    out = []
    for w in range(passes):
        host = machine * _host(rng, 2 * ROUNDS + 1, disturbed)
        noise = lambda n: np.exp(rng.normal(0, 0.02, n))  # noqa: E731
        k = KERNEL_S * kernel * host[1::2] * noise(ROUNDS)
        probes = {name: list(PROBE_S * host[::2] * noise(ROUNDS + 1)) for name in ("memory", "compute")}
        out.append(Measurement(tag(op="dequantize", fmt="Q4_K", size="16M", impl="mine", weights=1 << 24, nbytes=1,
                                   threads=None, pass_no=w), list(k), paired=probes if paired else {}))
        out.append(Measurement(tag(op="copyto", fmt="-", size="16M", impl=PROBE, weights=1 << 24, nbytes=1,
                                   threads=1, pass_no=w), list(PROBE_S * machine * noise(ROUNDS))))
    return out


def _baseline(*runs: list[Measurement]) -> dict:
    base = storage.snapshot(runs[0])
    for more in runs[1:]:
        base["runs"] += storage.snapshot(more)["runs"]
    return base


def _verdict(current: list[Measurement], pct: float = 5, baseline: dict | None = None) -> gate.Verdict:
    verdicts, problems = gate.compare(baseline or _baseline(_run(seed=0)), current, pct)
    assert problems == []
    (v,) = verdicts
    return v


def test_unchanged_code_passes():
    v = _verdict(_run(seed=1))
    assert v.verdict == "same" and not v.fails
    assert v.normalised == "memory probe, paired (the op's)" and v.runs == 1
    assert abs(v.ratio - 1) < 0.01


@pytest.mark.parametrize("slower", [1.05, 1.1, 1.25, 2.0])
def test_a_slower_kernel_fails(slower):
    v = _verdict(_run(seed=1, kernel=slower), pct=3)
    assert v.verdict == "slower" and v.fails
    assert v.ratio == pytest.approx(slower, rel=0.01)
    assert v.low > 1


@pytest.mark.parametrize("machine", [1.2, 1.5, 0.8])
def test_a_uniformly_slower_or_faster_machine_cancels_in_the_pairs(machine):
    v = _verdict(_run(seed=1, machine=machine))
    assert not v.fails
    assert v.ratio == pytest.approx(1.0, abs=0.01)


def test_a_slower_kernel_on_a_slower_machine_still_fails():
    v = _verdict(_run(seed=1, kernel=1.1, machine=1.3))
    assert v.fails and v.ratio == pytest.approx(1.1, rel=0.01)


def test_a_neighbour_that_slows_a_third_of_the_rounds_and_their_probes_cancels():
    v = _verdict(_run(seed=2, disturbed=0.5))
    assert not v.fails and v.ratio == pytest.approx(1.0, abs=0.01)
    unpaired = _verdict(_run(seed=2, disturbed=0.5, paired=False), baseline=_baseline(_run(seed=0, paired=False)))
    assert unpaired.normalised.startswith("np.copyto test, unpaired")
    assert abs(unpaired.ratio - 1) > abs(v.ratio - 1)  # what the pairing removes


def test_probe_calls_that_another_process_preempted_do_not_make_rounds_look_fast():
    current = _run(seed=2)
    rng = np.random.default_rng(9)
    for m in current:
        for times in m.paired.values():
            hit = rng.random(len(times)) < 0.25  # a quarter of the probe calls preempted: 3x as long
            times[:] = list(np.where(hit, 3 * np.asarray(times), times))
    v = _verdict(current)
    assert not v.fails and v.ratio == pytest.approx(1.0, abs=0.02)  # with the mean of the two: about 0.5


def _lucky_run(seed: int) -> list[Measurement]:
    """A run whose kernel was 15 % fast while the probes around its rounds saw nothing of it."""
    probes_as_usual = _run(seed=seed)
    return [Measurement(m.info, [t * 0.85 for t in m.rounds], paired=m.paired) if m.info["impl"] == "mine" else m
            for m in probes_as_usual]


def test_a_baseline_of_several_runs_is_their_median_and_says_so():
    assert _verdict(_run(seed=1), baseline=_baseline(_lucky_run(3))).fails  # one lucky baseline run decides
    base = _baseline(_run(seed=4), _run(seed=5), _lucky_run(3), _run(seed=6), _run(seed=7))
    v = _verdict(_run(seed=1), baseline=base)
    assert v.runs == 5 and v.spread == pytest.approx(1 / 0.85 - 1, abs=0.02)
    assert not v.fails and v.ratio == pytest.approx(1.0, abs=0.01)


def _tracking_memory(seed: int, kernel: float = 1.0) -> list[Measurement]:
    """A gemv whose time follows the memory probe from run to run (a state of the machine that
    slows both by up to 20 %), while the compute probe moves by up to 30 % of its own accord."""
    rng = np.random.default_rng(seed)
    memory_state, compute_state = rng.uniform(1.0, 1.2), rng.uniform(1.0, 1.3)
    noise = lambda n: np.exp(rng.normal(0, 0.01, n))  # noqa: E731
    rounds = KERNEL_S * kernel * memory_state * noise(ROUNDS)
    probes = {"memory": list(PROBE_S * memory_state * noise(ROUNDS + 1)),
              "compute": list(PROBE_S * compute_state * noise(ROUNDS + 1))}
    return [Measurement(tag(op="gemv", fmt="Q4_K", size="16M", impl="mine", weights=1 << 24, nbytes=1, threads=None),
                        list(rounds), paired=probes)]


def test_a_baseline_of_several_runs_picks_the_probe_its_runs_agree_under():
    several = _baseline(*(_tracking_memory(seed) for seed in range(5)))
    one = _baseline(_tracking_memory(0))
    for seed in range(10, 16):
        unchanged, slower = _verdict(_tracking_memory(seed), baseline=several), _verdict(
            _tracking_memory(seed, kernel=1.1), baseline=several)
        assert unchanged.normalised == "memory probe, paired (least spread of 5 baseline runs)"
        assert not unchanged.fails and unchanged.ratio == pytest.approx(1.0, abs=0.01)
        assert slower.fails and slower.ratio == pytest.approx(1.1, rel=0.01)
    # One run cannot tell: the op's probe (compute, for gemv), which this kernel does not follow.
    ratios = [_verdict(_tracking_memory(seed), baseline=one) for seed in range(10, 16)]
    assert {v.normalised for v in ratios} == {"compute probe, paired (the op's)"}
    assert max(abs(v.ratio - 1) for v in ratios) > 0.1


def test_a_probe_missing_from_any_baseline_run_is_not_chosen():
    runs = [_tracking_memory(seed) for seed in range(4)]
    for m in runs[0]:
        del m.paired["memory"]  # a run stored without the memory probe (hand-edited, or an older layout)
    verdict = _verdict(_tracking_memory(10), baseline=_baseline(*runs))
    # Left: compute alone (both needs the memory probe too), chosen from the 4 runs that all hold it.
    assert verdict.normalised == "compute probe, paired (least spread of 4 baseline runs)"


def test_the_threshold_leaves_a_small_significant_slowdown_alone():
    v = _verdict(_run(seed=1, kernel=1.03), pct=5)
    assert v.low > 1 and not v.fails


def test_a_baseline_stored_before_probes_were_paired_is_compared_through_the_probe_test(tmp_path):
    snap = storage.snapshot(_run(seed=0, paired=False))
    old = {"version": 1, "created": "then", "machine": snap["machine"], "benchmarks": snap["runs"][0]["benchmarks"]}
    for b in old["benchmarks"]:
        b["info"]["window"] = b["info"].pop("pass")
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = storage.load(tmp_path / "old.json")
    assert loaded["version"] == 2 and len(loaded["runs"]) == 1
    assert sorted(b["info"]["pass"] for b in loaded["runs"][0]["benchmarks"]) == [0, 0, 1, 1, 2, 2]
    verdicts, problems = gate.compare(loaded, _run(seed=1), 5)
    assert problems == [] and verdicts[0].verdict == "same"
    assert verdicts[0].normalised.startswith("np.copyto test, unpaired")


def _ab(new_over_old: float, seed: int = 0, drift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    host = _host(rng, 2 * ROUNDS + 1, 0.5) * np.linspace(1, 1 + drift, 2 * ROUNDS + 1)
    old = KERNEL_S * host[::2] * np.exp(rng.normal(0, 0.02, ROUNDS + 1))
    new = KERNEL_S * new_over_old * host[1::2] * np.exp(rng.normal(0, 0.02, ROUNDS))
    return new, old


@pytest.mark.parametrize("slower", [1.03, 1.05, 1.1])
def test_ab_measures_the_new_kernel_over_the_old_one_round_by_round(slower):
    ratio, low, high = gate.ab_ratio_ci(*_ab(slower))
    assert ratio == pytest.approx(slower, rel=0.005) and low < ratio < high
    assert high / low < 1.01


def test_ab_cancels_a_drift_of_the_machine_during_the_run():
    ratio, low, high = gate.ab_ratio_ci(*_ab(1.0, drift=0.5))
    assert low <= 1 <= high and ratio == pytest.approx(1.0, abs=0.003)


def test_ab_verdicts_fail_only_beyond_the_threshold():
    def measured(slower):
        new, old = _ab(slower, seed=4)
        info = tag(op="gemv", fmt="Q4_K", size="16M", impl="new", weights=1, nbytes=1, threads=None)
        return Measurement(dict(info, ab_baseline="old"), list(new), paired={"A": list(old)})

    verdicts, problems = gate.ab_compare([measured(1.0), measured(1.02), measured(1.05)], 3)
    assert problems == []
    assert [v.fails for v in verdicts] == [False, False, True]
    assert verdicts[2].key == "old -> new|Q4_K|gemv|16M" and verdicts[2].normalised.startswith("A/B")
    assert gate.ab_compare([], 3)[1] == [
        "--quantbench-ab: no A/B benchmark measured (deselected, skipped, or --benchmark-disable?)"]


def test_paired_ratios_pool_the_passes_each_over_its_own_calls():
    def measured(slower, host, seed):
        new, old = _ab(slower, seed=seed)
        info = tag(op="gemv", fmt="Q4_K", size="16M", impl="numba-1t", weights=1, nbytes=1, threads=1)
        return Measurement(info, list(new * host), paired={"llama.cpp": list(old * host)})

    # Two passes of one key, the second on a machine three times slower: each pass is 1.05 over its
    # own paired calls (pairing a pass's rounds with the other pass's calls would not be).
    unpaired = Measurement(tag(op="gemv", fmt="Q4_0", size="16M", impl="numba-1t", weights=1, nbytes=1,
                               threads=1), [1.0, 1.0])
    ratios = gate.paired_ratios([measured(1.05, 1.0, 1), measured(1.05, 3.0, 2), unpaired], "llama.cpp")
    assert list(ratios) == ["numba-1t|Q4_K|gemv|16M"]
    ratio, low, high = ratios["numba-1t|Q4_K|gemv|16M"]
    assert ratio == pytest.approx(1.05, rel=0.005) and low < ratio < high
    single = gate.paired_ratios([measured(1.05, 1.0, 1)], "llama.cpp")["numba-1t|Q4_K|gemv|16M"]
    assert single == gate.ab_ratio_ci(*_ab(1.05, seed=1))


def test_a_save_adds_its_run_and_keeps_the_last_ones(tmp_path):
    for seed in range(4):
        storage.save(tmp_path, "main", storage.snapshot(_run(seed=seed, passes=1)), keep=3)
    stored = storage.load(tmp_path / "main.json")
    assert len(stored["runs"]) == 3
    assert stored["runs"][-1]["benchmarks"][0]["rounds"] == storage.snapshot(_run(seed=3, passes=1))[
        "runs"][0]["benchmarks"][0]["rounds"]
    storage.save(tmp_path, "main", storage.snapshot(_run(seed=9, passes=1)), keep=1)
    assert len(storage.load(tmp_path / "main.json")["runs"]) == 1


def test_a_save_never_overwrites_what_it_cannot_read_or_another_machines_runs(tmp_path, monkeypatch):
    path = tmp_path / "main.json"
    path.write_text('{"version": 2, "runs": "oops"}')
    with pytest.raises(storage.StorageError, match="main.json is unreadable or corrupt: machine: is missing"):
        storage.save(tmp_path, "main", storage.snapshot(_run(seed=0, passes=1)), keep=5)
    assert path.read_text() == '{"version": 2, "runs": "oops"}'
    path.unlink()
    storage.save(tmp_path, "main", storage.snapshot(_run(seed=0, passes=1)), keep=5)
    before = path.read_bytes()
    monkeypatch.setattr(storage, "machine", lambda: {"cpu": "other", "cores": 64, "arch": "x", "system": "s"})
    with pytest.raises(storage.StorageError, match="holds runs of another machine"):
        storage.save(tmp_path, "main", storage.snapshot(_run(seed=1, passes=1)), keep=5)
    assert path.read_bytes() == before


def test_paired_times_must_be_one_more_than_the_rounds(tmp_path):
    snap = storage.snapshot(_run(seed=0, passes=1))
    snap["runs"][0]["benchmarks"][0]["paired"]["memory"].pop()
    with pytest.raises(ValueError, match=r"runs\[0\].benchmarks\[0\].paired.memory: is not a list of 301 times"):
        storage.validate(snap)


def test_the_tables_spread_is_pytest_benchmarks_own_iqr():
    from pytest_benchmark.stats import Stats

    rounds = [1.0, 2.0, 3.0, 4.0, 10.0, 11.0, 30.0]
    stats = Stats()
    for t in rounds:
        stats.update(t)
    m = Measurement({}, rounds)
    assert m.iqr == stats.iqr and m.median == stats.median == 4.0
    assert m.iqr != float(np.subtract(*np.percentile(rounds, [75, 25])))  # numpy's quartiles differ here


def test_both_probes_divide_by_their_geometric_mean():
    rounds = np.array([2.0, 2.0])
    paired = {"memory": [1.0, 1.0, 1.0], "compute": [4.0, 4.0, 4.0]}
    assert list(gate.paired_index(rounds, paired, "both")) == [1.0, 1.0]  # 2 / sqrt(1 * 4)
    assert list(gate.paired_index(rounds, paired, "memory")) == [2.0, 2.0]
    assert list(gate.paired_index(rounds, paired, "compute")) == [0.5, 0.5]
    from pytest_quantbench.ops import OPS

    assert {op.name: op.probe for op in OPS.values()} == {
        "dequantize": "memory", "quantize": "compute", "quantize_imatrix": "compute", "vec_dot": "compute",
        "gemv": "compute"}
    assert all(op.probe in gate.PROBES for op in OPS.values())


def test_each_round_is_divided_by_the_faster_of_the_probes_timed_just_before_and_after_it():
    from pytest_quantbench.gate import faster_neighbour, sandwiched

    assert list(faster_neighbour([1.0, 3.0, 5.0, 2.0])) == [1.0, 3.0, 2.0]
    assert list(sandwiched([1.0, 3.0, 5.0, 2.0])) == [2.0, 4.0, 3.5]  # A/B: the old kernel's mean


def test_ab_reads_each_input_copy_cold_the_old_kernel_half_a_rotation_away():
    from pytest_quantbench.workloads import Workload

    work = Workload([(i,) for i in range(8)], 1, 1)
    new, old = work.caller(lambda i: i), work.opposite_caller(lambda i: i)
    pairs = [(old(), new()) for _ in range(8)]
    assert pairs[:3] == [(4, 0), (5, 1), (6, 2)]
    assert sorted(o for o, _ in pairs) == sorted(n for _, n in pairs) == list(range(8))


@pytest.mark.parametrize(("llc_mb", "input_mb", "expected"), [
    (32, 9, 8),  # a Zen 2's L3: 72 MB of copies, past twice the L3
    (300, 9, 67),  # a Xeon's: 603 MB (at most 16 copies read from the L3 there)
    (300, 64, 10),  # NumPy's float32 matrix at 16M, beside them
    (1024, 9, 113),  # a larger L3 still: bounded by MAX_ROTATION_BYTES, 1 GiB
])
def test_large_inputs_rotate_past_twice_the_l3_within_a_bound(monkeypatch, llc_mb, input_mb, expected):
    from pytest_quantbench import workloads
    from pytest_quantbench.options import Size

    monkeypatch.setattr(workloads, "last_level_cache_bytes", lambda: llc_mb << 20)
    n = workloads.copies(Size("16M", 4096, 4096), input_mb << 20)
    assert n == expected
    assert n * input_mb >= 2 * llc_mb or (n + 1) * (input_mb << 20) > workloads.MAX_ROTATION_BYTES
    assert workloads.copies(Size("cache", 256, 4096), input_mb << 20) <= workloads.SMALL_COPIES
