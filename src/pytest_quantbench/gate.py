"""The regression gate: the statistics that compare a run with a stored baseline (see
:mod:`storage`), and the A/B comparison of two kernels measured in one process. How it works and
how it was calibrated: docs/gate.md.

Against a stored baseline: each kernel round is divided by the probes timed just before and after
it (:func:`paired_index`: the probe under which the baseline's runs agree best, else the op's,
:func:`_probe_for`), so that what the host did in that moment cancels; a run's speed index is the
20th percentile of those (other processes only ever add time, so a low percentile is steadier
than the median), pooled over the passes; the ratio is the
current index over the median of the baseline's runs' indices (:func:`baseline_ratio_ci`). A/B:
the median of per-round log ratios of the new kernel over the old one's calls around each round
(:func:`ab_ratio_ci`). Either ratio gets a bootstrap 95% interval, and a kernel fails only when the
ratio exceeds 1 + PCT/100 *and* the interval lies wholly above 1 (:func:`_judge`). Baselines stored
before the probes were paired are compared through the separately measured ``np.copyto`` probe
(:func:`ratio_ci`, :func:`probe_correction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import storage
from .findings import Measurement
from .ops import OPS
from .table import PROBE, REFERENCE, is_llamacpp

BOOTSTRAP = 2000
MAX_ROUNDS = 1000  # rounds per set used by the bootstrap (evenly spaced in time if there are more)
PROBE_BAND = 0.03  # probe changes within +-3% are not corrected for (see probe_correction)
CHOOSE_FROM_RUNS = 3  # baseline runs from which a kernel's probe is chosen by their spread (_probe_for)
QUANTILE = 20  # percentile of the round times that the gate compares (see speed_index)


@dataclass
class Verdict:
    key: str
    ratio: float
    low: float
    high: float
    verdict: str  # "slower", "faster" or "same"
    fails: bool
    normalised: str = ""  # how the times were made comparable
    runs: int = 1  # runs of the baseline the ratio is over
    spread: float = 0.0  # the baseline's runs: largest speed index over smallest, minus 1


def _spaced(rounds: np.ndarray) -> np.ndarray:
    if rounds.size <= MAX_ROUNDS:
        return rounds
    return rounds[np.linspace(0, rounds.size - 1, MAX_ROUNDS).astype(int)]


def speed_index(rounds: np.ndarray, axis: int | None = None) -> np.ndarray:
    """The statistic compared: the QUANTILE-th percentile of round times. Interference from other
    processes only ever adds time, so a low percentile moves less from run to run than the median."""
    return np.percentile(rounds, QUANTILE, axis=axis)


def probe_correction(probe_ratio: np.ndarray | float, band: float) -> np.ndarray | float:
    """The factor a kernel's time ratio is divided by, given the probe's ratio current / baseline:
    the part of the probe's change beyond +-``band``. Within the band the probe's change is its own
    run-to-run noise (it moves more than the kernels it normalises), and dividing by noise only adds
    noise; beyond it the machine really is faster or slower, and that part is cancelled. A machine
    uniformly slower by any amount thus moves a kernel's ratio by ``band`` at most."""
    return probe_ratio / np.clip(probe_ratio, 1 / (1 + band), 1 + band)


def ratio_ci(base: np.ndarray, base_probe: np.ndarray, cur: np.ndarray, cur_probe: np.ndarray, *,
             band: float = 0.0, seed: int = 0) -> tuple[float, float, float]:
    """(cur / base) / :func:`probe_correction` ((cur_probe / base_probe), band) on
    :func:`speed_index`, and its bootstrap 95% interval (percentile method), resampling all four
    sets of rounds."""
    rng = np.random.default_rng(seed)

    def resampled(x: np.ndarray) -> np.ndarray:
        x = _spaced(np.asarray(x, float))
        return speed_index(x[rng.integers(0, x.size, (BOOTSTRAP, x.size))], axis=1)

    def ratio(b, bp, c, cp):  # type: ignore[no-untyped-def]
        return (c / b) / probe_correction(cp / bp, band)

    boot = ratio(resampled(base), resampled(base_probe), resampled(cur), resampled(cur_probe))
    low, high = np.percentile(boot, [2.5, 97.5])
    point = ratio(speed_index(base), speed_index(base_probe), speed_index(cur), speed_index(cur_probe))
    return float(point), float(low), float(high)


PROBES = {"memory": ("memory",), "compute": ("compute",), "both": ("memory", "compute")}  # Op.probe -> paired


def sandwiched(paired: np.ndarray) -> np.ndarray:
    """Per round, the mean of the paired calls timed just before and just after it (``paired``
    has one more time than there are rounds): a drift of the machine during the round cancels to
    first order. For A/B, where the paired calls are the old kernel's."""
    paired = np.asarray(paired, float)
    return (paired[:-1] + paired[1:]) / 2


def faster_neighbour(paired: np.ndarray) -> np.ndarray:
    """Per round, the faster of the two paired calls timed just before and just after it. For the
    probes: another process only ever adds time, and a probe call that it preempted would make the
    round look fast; the faster neighbour is the one that saw the machine as the round did (the
    mean let preempted probe calls through: docs/gate.md). Its bias, the minimum of two, is the
    same in every run and cancels in a ratio of runs."""
    paired = np.asarray(paired, float)
    return np.minimum(paired[:-1], paired[1:])


def paired_index(rounds: np.ndarray, paired: dict, probe: str) -> np.ndarray:
    """Each round's time over its paired probe's (:func:`faster_neighbour`; for "both"
    the geometric mean of the memory and the compute probe's): what the host did in that
    millisecond slows both and cancels."""
    logs = [np.log(faster_neighbour(paired[name])) for name in PROBES[probe]]
    return np.asarray(rounds, float) / np.exp(np.mean(logs, axis=0))


def _boot_index(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = _spaced(np.asarray(x, float))
    return speed_index(x[rng.integers(0, x.size, (BOOTSTRAP, x.size))], axis=1)


def baseline_ratio_ci(base_runs: list[np.ndarray], cur: np.ndarray, *, seed: int = 0
                      ) -> tuple[float, float, float, float]:
    """The ratio of the current run's :func:`speed_index` of time-paired rounds (``cur``) over the
    baseline's (the median of its runs' indices), its bootstrap 95% interval, and the baseline's
    spread (its runs' largest index over its smallest, minus 1). The bootstrap resamples the
    current rounds and, for the baseline, its runs and each run's rounds: a baseline of several
    runs carries their run-to-run spread into the interval, so one run's luck does not decide."""
    rng = np.random.default_rng(seed)
    indices = np.array([float(speed_index(b)) for b in base_runs])
    boots = np.stack([_boot_index(b, rng) for b in base_runs])  # (runs, BOOTSTRAP)
    picks = rng.integers(0, len(base_runs), (BOOTSTRAP, len(base_runs)))
    centre_boot = np.median(boots[picks, np.arange(BOOTSTRAP)[:, None]], axis=1)
    boot = _boot_index(cur, rng) / centre_boot
    low, high = np.percentile(boot, [2.5, 97.5])
    point = float(speed_index(cur)) / float(np.median(indices))
    return point, float(low), float(high), float(indices.max() / indices.min() - 1)


def ab_ratio_ci(new: np.ndarray, old_paired: np.ndarray, *, seed: int = 0) -> tuple[float, float, float]:
    """A/B: NEW's time over OLD's, from the rounds of NEW and OLD's calls in between them: the
    median of the per-round log ratios (each NEW round over the mean of the OLD calls just before
    and after it), and its bootstrap 95% interval over the rounds."""
    return _median_ratio_ci(_log_ratios(new, old_paired), seed)


def paired_ratios(measured: list[Measurement], name: str, *, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Per benchmark key, its time over that of the calls ``name`` timed in between its rounds
    (``Measurement.paired``), as :func:`ab_ratio_ci` gives it: the log ratios of every pass of the
    key pooled, each pass's rounds over its own paired calls. Keys measured without ``name`` are
    left out. (Passes cannot be paired after :func:`findings.merge_passes` joins their rounds.)"""
    logs: dict[str, list[np.ndarray]] = {}
    for m in measured:
        if name in m.paired:
            logs.setdefault(m.key, []).append(_log_ratios(m.rounds, m.paired[name]))
    return {key: _median_ratio_ci(np.concatenate(parts), seed) for key, parts in logs.items()}


def _log_ratios(new, old_paired) -> np.ndarray:
    return np.log(np.asarray(new, float)) - np.log(sandwiched(old_paired))


def _median_ratio_ci(d: np.ndarray, seed: int) -> tuple[float, float, float]:
    rng = np.random.default_rng(seed)
    d = _spaced(d)
    boot = np.median(d[rng.integers(0, d.size, (BOOTSTRAP, d.size))], axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return float(np.exp(np.median(d))), float(np.exp(low)), float(np.exp(high))


@dataclass
class _Benchmarks:
    """One run's kernel benchmarks by key (one entry per pass: pass, size, rounds, paired) and
    its separately measured probes by (size, pass). References and llama.cpp's kernels (comparisons)
    are left out."""

    kernels: dict[str, list[tuple[int, str, np.ndarray, dict]]]
    probes: dict[tuple, np.ndarray]

    @classmethod
    def of(cls, benchmarks: list[dict]) -> _Benchmarks:
        out = cls({}, {})
        for b in benchmarks:
            info = b["info"]
            impl, size, pass_no = info["impl"], info["size"], info.get("pass", 0)
            if impl == PROBE:
                out.probes[(size, pass_no)] = np.asarray(b["rounds"], float)
            elif impl != REFERENCE and not is_llamacpp(impl):  # comparisons, not gated
                out.kernels.setdefault(b["key"], []).append(
                    (pass_no, size, np.asarray(b["rounds"], float), b.get("paired") or {}))
        return out

    def paired(self, key: str, probe: str) -> np.ndarray | None:
        """The key's time-paired rounds (:func:`paired_index`) of all passes, or None if a pass
        was stored without that probe."""
        passes = self.kernels[key]
        if not all(name in p for _, _, _, p in passes for name in PROBES[probe]):
            return None
        return np.concatenate([paired_index(r, p, probe) for _, _, r, p in passes])

    def pooled(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """The key's rounds of every pass together, and the separate probe's rounds of the same
        passes, or None if no pass has its probe. A disturbance that spoils one pass (of the
        kernel or of the probe) then holds only part of the rounds and barely moves their low
        percentile."""
        usable = [(r, self.probes[(size, w)]) for w, size, r, _ in self.kernels[key] if (size, w) in self.probes]
        if not usable:
            return None
        return np.concatenate([r for r, _ in usable]), np.concatenate([p for _, p in usable])


def _entries(current: list[Measurement]) -> list[dict]:
    return [{"key": m.key, "info": m.info, "rounds": m.rounds, "paired": m.paired} for m in current]


def _judge(key: str, ratio: float, low: float, high: float, fail_pct: float | None, **how: object) -> Verdict:
    threshold = 1 + (fail_pct or 0) / 100
    if low > 1 and ratio > threshold:
        verdict = "slower"
    elif high < 1 and ratio < 1 / threshold:
        verdict = "faster"
    else:
        verdict = "same"
    return Verdict(key, ratio, low, high, verdict, fail_pct is not None and verdict == "slower", **how)


def _undefined(key: str, ratio: float, low: float, high: float) -> str | None:
    if all(math.isfinite(v) for v in (ratio, low, high)):
        return None
    return f"{key}: the ratio is undefined ({ratio}, interval [{low}, {high}])"


def compare(baseline: dict, current: list[Measurement], fail_pct: float | None) -> tuple[list[Verdict], list[str]]:
    """Verdicts per kernel against a stored baseline (:func:`storage.load`), and the problems that
    make the comparison unusable. Each kernel is normalised by its op's paired probe
    (``OPS[op].probe``) where this run and every run of the baseline timed it; a baseline stored
    before probes were paired is compared through the separately measured probe instead
    (:func:`ratio_ci`), with its latest run."""
    problems = []
    here = storage.machine()
    if baseline["machine"] != here:
        problems.append(f"the baseline was measured on another machine ({baseline['machine']}); this is {here}")
    if not current:
        problems.append("this run measured no benchmarks (under xdist, or with --benchmark-disable?)")
    runs = [_Benchmarks.of(run["benchmarks"]) for run in baseline["runs"]]
    cur = _Benchmarks.of(_entries(current))
    base_keys = set().union(*(r.kernels for r in runs))
    missing, extra = sorted(set(cur.kernels) - base_keys), sorted(set(runs[-1].kernels) - set(cur.kernels))
    if missing:
        problems.append(f"no baseline data for: {', '.join(missing)} (another kernel set)")
    if extra:
        problems.append(f"the baseline has kernels this run did not measure: {', '.join(extra)}")
    band = PROBE_BAND if fail_pct is None else min(PROBE_BAND, fail_pct / 200)
    verdicts = []
    for key in sorted(set(cur.kernels) & base_keys):
        holding = [r for r in runs if key in r.kernels]
        probe, chosen = _probe_for(key, holding)
        base_paired = [r.paired(key, probe) for r in holding]
        cur_paired = cur.paired(key, probe)
        if cur_paired is not None and all(b is not None for b in base_paired):
            ratio, low, high, spread = baseline_ratio_ci(base_paired, cur_paired)
            how = {"normalised": f"{probe} probe{'s' if probe == 'both' else ''}, paired ({chosen})",
                   "runs": len(holding), "spread": spread}
        else:
            b, c = holding[-1].pooled(key), cur.pooled(key)
            if b is None or c is None:
                problems.append(f"{key}: no np.copyto probe at its size and pass in both runs, nothing to normalise by")
                continue
            ratio, low, high = ratio_ci(b[0], b[1], c[0], c[1], band=band)
            how = {"normalised": "np.copyto test, unpaired (a baseline stored before probes were paired)", "runs": 1}
        problem = _undefined(key, ratio, low, high)
        if problem:
            problems.append(problem)
            continue
        verdicts.append(_judge(key, ratio, low, high, fail_pct, **how))
    return verdicts, problems


def _probe_of(key: str) -> str:
    op = key.split("|")[2]
    return OPS[op].probe if op in OPS else "memory"


def _probe_for(key: str, holding: list[_Benchmarks]) -> tuple[str, str]:
    """The probe a kernel's rounds are divided by, and why: of the paired probes (memory, compute,
    both), the one under which the baseline's runs agree best (the least spread of their speed
    indices) where the baseline holds CHOOSE_FROM_RUNS runs or more that paired them all; else the
    op's (``OPS[op].probe``). Which probe tracks a kernel is the machine's affair as much as the
    kernel's: a one-thread gemv from memory was best divided by the compute probe on one VM and by
    the memory probe on another (docs/gate.md)."""
    spreads = {}
    if len(holding) >= CHOOSE_FROM_RUNS:
        for probe in PROBES:
            indices = [r.paired(key, probe) for r in holding]
            if all(i is not None for i in indices):
                spreads[probe] = float(np.std(np.log([speed_index(i) for i in indices])))
    if not spreads:
        return _probe_of(key), "the op's"
    return min(spreads, key=spreads.__getitem__), f"least spread of {len(holding)} baseline runs"


def ab_compare(measured: list[Measurement], fail_pct: float | None) -> tuple[list[Verdict], list[str]]:
    """Verdicts of the A/B benchmarks (``--quantbench-ab OLD,NEW``), and the problems: none measured."""
    if not measured:
        return [], ["--quantbench-ab: no A/B benchmark measured (deselected, skipped, or --benchmark-disable?)"]
    verdicts, problems = [], []
    for m in measured:
        key = f"{m.info['ab_baseline']} -> {m.key}"
        ratio, low, high = ab_ratio_ci(np.asarray(m.rounds), np.asarray(m.paired["A"]))
        problem = _undefined(key, ratio, low, high)
        if problem:
            problems.append(problem)
            continue
        verdicts.append(_judge(key, ratio, low, high, fail_pct, normalised="A/B, paired round by round", runs=1))
    return verdicts, problems


def format_verdicts(verdicts: list[Verdict], fail_pct: float | None) -> list[str]:
    """The verdict table: ratio (current / baseline time), interval, verdict, the baseline's runs
    and their spread, and how the times were normalised."""
    rule = f"fails when slower by > {fail_pct:g}% and the 95% interval is above 1" if fail_pct is not None else ""
    width = max([48] + [len(v.key) for v in verdicts])
    lines = [f"{'kernel|format|op|size':<{width}} {'ratio':>7} {'95% interval':>17}  {'verdict':<8} "
             f"{'runs':>4} {'spread':>6}  normalised by   {rule}"]
    for v in verdicts:
        mark = "FAIL" if v.fails else ""
        lines.append(f"{v.key:<{width}} {v.ratio:>7.3f} [{v.low:>6.3f}, {v.high:>6.3f}]  {v.verdict:<8} "
                     f"{v.runs:>4} {v.spread:>6.1%}  {v.normalised}  {mark}")
    return lines
