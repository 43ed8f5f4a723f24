"""The regression gate: the statistics that compare a run with a stored one (see :mod:`storage`).

Each kernel's speed index (the 20th percentile of its round times: other processes only ever add
time, so a low percentile is steadier than the median) is compared with the baseline's, and the
ratio is corrected by the same session's bandwidth probe (``np.copyto`` at the same size), so that a
machine that is uniformly slower today (another tenant, a lower clock) does not look like a
regression: see :func:`probe_correction`. The ratio gets a bootstrap 95% confidence interval (all
four sets of rounds resampled); a kernel fails the gate only when the ratio exceeds 1 + PCT/100
*and* the interval lies wholly above 1 (the slowdown is significant). With
``--quantbench-passes N`` every benchmark is measured in N passes, each with its own probe, and
the rounds of all passes are pooled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import storage
from .record import Measurement
from .throughput import PROBE, REFERENCE

BOOTSTRAP = 2000
MAX_ROUNDS = 1000  # rounds per set used by the bootstrap (evenly spaced in time if there are more)
PROBE_BAND = 0.03  # probe changes within +-3% are not corrected for (see probe_correction)
QUANTILE = 20  # percentile of the round times that the gate compares (see speed_index)


@dataclass
class Verdict:
    key: str
    ratio: float
    low: float
    high: float
    verdict: str  # "slower", "faster" or "same"
    fails: bool


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


def _split(benchmarks: list[dict]) -> tuple[dict[str, list[tuple[int, str, np.ndarray]]], dict[tuple, np.ndarray]]:
    """Kernel rounds by key, one entry per pass; probe rounds by (size, pass). References are left out."""
    kernels: dict[str, list[tuple[int, str, np.ndarray]]] = {}
    probes: dict[tuple, np.ndarray] = {}
    for b in benchmarks:
        info = b["info"]
        impl, size, pass_no = info["impl"], info["size"], info.get("pass", 0)
        if impl == PROBE:
            probes[(size, pass_no)] = np.asarray(b["rounds"], float)
        elif impl != REFERENCE:
            kernels.setdefault(b["key"], []).append((pass_no, size, np.asarray(b["rounds"], float)))
    return kernels, probes


def _pooled(passes: list[tuple[int, str, np.ndarray]], probes: dict[tuple, np.ndarray]):
    """A kernel's rounds of every pass together, and the probe's rounds of the same passes, or None
    if no pass has its probe. A disturbance that spoils one pass (of the kernel or of the probe)
    then holds only part of the rounds and barely moves their low percentile."""
    usable = [(rounds, probes[(size, w)]) for w, size, rounds in passes if (size, w) in probes]
    if not usable:
        return None
    return np.concatenate([r for r, _ in usable]), np.concatenate([p for _, p in usable])


def compare(baseline: dict, current: list[Measurement], fail_pct: float | None) -> tuple[list[Verdict], list[str]]:
    """Verdicts per kernel, and the problems that make the comparison unusable."""
    problems = []
    here = storage.machine()
    if baseline["machine"] != here:
        problems.append(f"the baseline was measured on another machine ({baseline['machine']}); this is {here}")
    if not current:
        problems.append("this run measured no benchmarks (under xdist, or with --benchmark-disable?)")
    base, base_probes = _split(baseline["benchmarks"])
    cur, cur_probes = _split([{"key": m.key, "info": m.info, "rounds": m.rounds} for m in current])
    missing, extra = sorted(set(cur) - set(base)), sorted(set(base) - set(cur))
    if missing:
        problems.append(f"no baseline data for: {', '.join(missing)} (another kernel set)")
    if extra:
        problems.append(f"the baseline has kernels this run did not measure: {', '.join(extra)}")
    threshold = 1 + (fail_pct or 0) / 100
    band = PROBE_BAND if fail_pct is None else min(PROBE_BAND, fail_pct / 200)
    verdicts = []
    for key in sorted(set(cur) & set(base)):
        b, c = _pooled(base[key], base_probes), _pooled(cur[key], cur_probes)
        if b is None or c is None:
            problems.append(f"{key}: no np.copyto probe at its size and pass in both runs, nothing to normalise by")
            continue
        ratio, low, high = ratio_ci(b[0], b[1], c[0], c[1], band=band)
        if not all(math.isfinite(v) for v in (ratio, low, high)):
            problems.append(f"{key}: the ratio is undefined ({ratio}, interval [{low}, {high}])")
            continue
        if low > 1 and ratio > threshold:
            verdict = "slower"
        elif high < 1 and ratio < 1 / threshold:
            verdict = "faster"
        else:
            verdict = "same"
        verdicts.append(Verdict(key, ratio, low, high, verdict, fail_pct is not None and verdict == "slower"))
    return verdicts, problems


def format_verdicts(verdicts: list[Verdict], fail_pct: float | None) -> list[str]:
    rule = f"fails when slower by > {fail_pct:g}% and the 95% interval is above 1" if fail_pct is not None else ""
    lines = [f"{'kernel|format|op|size':<48} {'ratio':>7} {'95% interval':>17}  verdict   {rule}"]
    for v in verdicts:
        mark = "FAIL" if v.fails else ""
        lines.append(f"{v.key:<48} {v.ratio:>7.3f} [{v.low:>6.3f}, {v.high:>6.3f}]  {v.verdict:<8} {mark}")
    return lines
