"""Summarise a gate calibration (run.sh): the gate's verdicts, and how much of the run-to-run
spread each way of normalising the kernels' times removes.

usage: python analyse.py DIR     (DIR: the scratch project run.sh filled)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from pytest_quantbench import gate, storage
from pytest_quantbench.record import Measurement
from pytest_quantbench.workloads import sandwiched

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


def regated(directory: Path, pct: float) -> dict[tuple[str, str], list[tuple[float, bool]]]:
    """(slowdown, op) -> [(ratio, failed)]: each stored run gated again against the stored
    baseline by this checkout's gate (so that a change of the gate's statistics can be evaluated
    on the same rounds)."""
    stored = directory / ".quantbench"
    base = storage.load(stored / "base.json")
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
        m = np.concatenate([sandwiched(b["paired"]["memory"]) for b in passes])
        c = np.concatenate([sandwiched(b["paired"]["compute"]) for b in passes])
        unpaired = gate.speed_index(np.concatenate(probes[passes[0]["info"]["size"]]))
        out[key] = {
            "none": gate.speed_index(k),
            "np.copyto test, unpaired": gate.speed_index(k) / unpaired,
            "memory, paired": gate.speed_index(k / m),
            "compute, paired": gate.speed_index(k / c),
            "both (geometric mean), paired": gate.speed_index(k / np.sqrt(m * c)),
        }
    return out


def spread_table(directory: Path) -> list[str]:
    """Markdown: per kernel and normalisation, the spread of the unchanged runs' indices (standard
    deviation of their logarithm, in %), the share of the variance it removes, and the ratio
    range of each case against the baseline (point estimates)."""
    stored = directory / ".quantbench"
    base = _indices(storage.load(stored / "base.json")["runs"][0])
    runs = {case: [_indices(storage.load(p)["runs"][0]) for p in sorted(stored.glob(f"run_{case}_*.json"))]
            for case in CASES}
    lines = ["| kernel | normalised by | spread of unchanged runs | variance removed | "
             "ratio: unchanged | 10 % slower | 5 % slower |", "|---|---|---|---|---|---|---|"]
    for key in sorted(base):
        logs = {how: np.log([r[key][how] for r in runs["0"]]) for how in base[key]}
        for how in base[key]:
            sd = float(np.std(logs[how], ddof=1))
            removed = 1 - sd**2 / float(np.var(logs["none"], ddof=1))
            ranges = []
            for case in CASES:
                ratios = [r[key][how] / base[key][how] for r in runs[case]]
                ranges.append(f"{min(ratios):.3f} - {max(ratios):.3f}")
            lines.append(f"| {key.split('|')[2]} | {how} | {100 * sd:.1f} % | {removed:+.0%} | " + " | ".join(ranges)
                         + " |")
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
        _verdict_table(regated(directory, 5), "The same stored runs gated again by this checkout's gate (fail-on 5):")
        print("\nHow much of the run-to-run spread each normalisation removes:\n")
        print("\n".join(spread_table(directory)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
