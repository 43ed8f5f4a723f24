"""Summarise a gate calibration (run.sh): the gate's verdicts, and how much of the run-to-run
spread each way of normalising the kernels' times removes.

usage: python analyse.py DIR     (DIR: the scratch project run.sh filled)
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np

from pytest_quantbench import gate, storage
from pytest_quantbench.findings import Measurement

VERDICT = re.compile(r"^(?P<key>[^|\s]+(?: -> [^|\s]+)?\|\w+\|(?P<op>\w+)\|\S+)\s+(?P<ratio>[\d.]+) "
                     r"\[\s*[\d.]+,\s*[\d.]+\]\s+(?P<verdict>\w+).*?(?P<fail>FAIL)?\s*$")
CASES = ("0", "0.10", "0.05")


def verdicts(directory: Path) -> dict[tuple[str, str], list[tuple[float, bool]]]:
    """(slowdown, op) -> [(ratio, failed)] of the gated runs' logs."""
    out: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for log in sorted(directory.glob("run_*.log")):
        slow = log.stem.split("_")[1]
        for line in log.read_text().splitlines():
            m = VERDICT.match(line)
            if m:
                out.setdefault((slow, m["op"]), []).append((float(m["ratio"]), m["fail"] is not None))
    return out


def regated(directory: Path, pct: float, base_runs: int | None = None) -> dict[tuple[str, str], list]:
    """(slowdown, op) -> [(ratio, failed)]: each stored run gated again by this checkout's gate
    against the stored baseline (its first ``base_runs`` runs; None: all of them), so that the
    same rounds evaluate a one-run baseline, and any change of the gate's statistics."""
    stored = directory / ".quantbench"
    base = storage.load(stored / "base.json")
    base["runs"] = base["runs"][:base_runs]
    out: dict[tuple[str, str], list[tuple[float, bool]]] = {}
    for path in sorted(stored.glob("run_*.json")):
        run = storage.load(path)["runs"][0]
        current = [Measurement(b["info"], b["rounds"], paired=b.get("paired") or {}) for b in run["benchmarks"]]
        for v in gate.compare(base, current, pct)[0]:
            out.setdefault((path.stem.split("_")[1], v.key.split("|")[2]), []).append((v.ratio, v.fails))
    return out


def _indices(run: dict) -> dict[str, dict[str, float]]:
    """Per kernel key: its speed index under each normalisation, in one stored run."""
    probes: dict[tuple, list[np.ndarray]] = {}
    kernels: dict[str, list[dict]] = {}
    for b in run["benchmarks"]:
        if b["info"]["impl"] == "np.copyto":
            probes.setdefault(b["info"]["size"], []).append(np.asarray(b["rounds"]))
        elif b.get("paired"):
            kernels.setdefault(b["key"], []).append(b)
    out = {}
    for key, passes in kernels.items():
        k = np.concatenate([b["rounds"] for b in passes])
        unpaired = gate.speed_index(np.concatenate(probes[passes[0]["info"]["size"]]))
        out[key] = {"none": gate.speed_index(k), "np.copyto test, unpaired": gate.speed_index(k) / unpaired}
        for probe in gate.PROBES:
            paired = np.concatenate([gate.paired_index(b["rounds"], b["paired"], probe) for b in passes])
            out[key][f"{probe}, paired"] = gate.speed_index(paired)
    return out


def spread_table(directory: Path) -> list[str]:
    """Markdown: per kernel and normalisation, the spread of the speed indices of the runs of
    unchanged code (the baseline's and the gated ones: the standard deviation of their logarithm,
    in %) and the share of the variance it removes."""
    stored = directory / ".quantbench"
    runs = storage.load(stored / "base.json")["runs"] + [
        storage.load(p)["runs"][0] for p in sorted(stored.glob("run_0_*.json"))]
    indices = [_indices(run) for run in runs]
    lines = ["| kernel | normalised by | spread of unchanged runs | variance removed |", "|---|---|---|---|"]
    for key in sorted(indices[0]):
        logs = {how: np.log([i[key][how] for i in indices]) for how in indices[0][key]}
        for how, values in logs.items():
            sd = float(np.std(values, ddof=1))
            removed = 1 - sd**2 / float(np.var(logs["none"], ddof=1))
            lines.append(f"| {key.split('|')[2]} | {how} | {100 * sd:.1f} % | {removed:+.0%} |")
    lines.append(f"\n({len(runs)} runs of unchanged code.)")
    return lines


FAST_STATE = 0.10  # a round is in the fast state when both its compute-probe calls are within 10 % of the quietest


def _fast_rounds(run: dict, op: str, quietest: float) -> np.ndarray:
    """The op's kernel rounds of a stored run that sit in the fast state, divided by both paired
    probes (``gate.paired_index``); passes stored without both probes have none."""
    kept = []
    for b in run["benchmarks"]:
        paired = b.get("paired") or {}
        if b["info"]["impl"] == "timed" and b["info"]["op"] == op and {"compute", "memory"} <= paired.keys():
            compute = np.asarray(paired["compute"])
            fast = np.maximum(compute[:-1], compute[1:]) <= quietest * (1 + FAST_STATE)
            kept.append(gate.paired_index(b["rounds"], paired, "both")[fast])
    return np.concatenate(kept) if kept else np.empty(0)


def _quietest(runs: list[dict]) -> float:
    """The quietest compute-probe call of these runs: the least 5th percentile of a pass's calls
    (NaN if none paired the compute probe: then no round counts as fast)."""
    return min((float(np.percentile(b["paired"]["compute"], 5))
                for run in runs for b in run["benchmarks"] if (b.get("paired") or {}).get("compute")),
               default=math.nan)


def fast_state_table(directory: Path) -> list[str]:
    """Markdown: the fast-state statistic tried offline (docs/gate.md), not the gate's: each run's
    speed index of its fast-state rounds over the median of the baseline runs' (those with 5 such
    rounds or more), per case and op: how many runs exceed 1.05, their range, and how many runs had
    fewer than 5 such rounds."""
    stored = directory / ".quantbench"
    base = storage.load(stored / "base.json")["runs"]
    runs = {p.stem: storage.load(p)["runs"][0] for p in sorted(stored.glob("run_*.json"))}
    quiet_base = _quietest(base)
    quietest = {name: min(quiet_base, _quietest([run])) for name, run in runs.items()}
    lines = ["| case | op | runs over 1.05 | ratio range | runs without 5 fast rounds |", "|---|---|---|---|---|"]
    centres = {}  # op -> the median speed index of the baseline runs' fast rounds
    for op in ("dequantize", "gemv"):
        fast_base = [f for f in (_fast_rounds(r, op, quiet_base) for r in base) if f.size >= 5]
        if fast_base:
            centres[op] = np.median([gate.speed_index(f) for f in fast_base])
    for case in CASES:
        for op, centre in centres.items():
            ratios, empty = [], 0
            for name, run in runs.items():
                if name.split("_")[1] == case:
                    fast = _fast_rounds(run, op, quietest[name])
                    if fast.size < 5:
                        empty += 1
                    else:
                        ratios.append(gate.speed_index(fast) / centre)
            if ratios or empty:
                span = f"{min(ratios):.3f} - {max(ratios):.3f}" if ratios else "-"
                lines.append(f"| {'unchanged' if case == '0' else f'{float(case):.0%} slower'} | {op} | "
                             f"{sum(r > 1.05 for r in ratios)} of {len(ratios)} | {span} | {empty} |")
    return lines


def _verdict_table(found: dict[tuple[str, str], list[tuple[float, bool]]], title: str) -> None:
    print(f"\n{title}\n\n| case | op | runs that failed the gate | ratio range |\n|---|---|---|---|")
    for case in CASES:
        for op in ("dequantize", "gemv"):
            got = found.get((case, op), [])
            if got:
                ratios = [r for r, _ in got]
                print(f"| {'unchanged' if case == '0' else f'{float(case):.0%} slower'} | {op} | "
                      f"{sum(f for _, f in got)} of {len(got)} | {min(ratios):.3f} - {max(ratios):.3f} |")


def main(directory: Path) -> None:
    finished = directory / "finished.txt"
    print(f"{directory}: started {(directory / 'started.txt').read_text().strip()}, "
          f"finished {finished.read_text().strip() if finished.exists() else '-'}")
    _verdict_table(verdicts(directory), "As the runs' own gates printed:")
    if (directory / ".quantbench" / "base.json").exists():
        _verdict_table(regated(directory, 5), "Gated again by this checkout's gate, against the whole baseline "
                       "(fail-on 5):")
        _verdict_table(regated(directory, 5, 1), "Gated again by this checkout's gate, against the baseline's first "
                       "run alone (fail-on 5):")
        print("\nHow much of the run-to-run spread each normalisation removes:\n")
        print("\n".join(spread_table(directory)))
        print("\nThe fast-state statistic (offline, not the gate's; docs/gate.md):\n")
        print("\n".join(fast_state_table(directory)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
