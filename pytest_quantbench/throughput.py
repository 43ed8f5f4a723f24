"""What a kernel call moves and computes, and the throughput table built from measured times.

A measurement is tagged (``extra_info``) with its op, format, size label, implementation, weights
and bytes moved. :func:`derive` turns a session's measurements into weights/s, GB/s, the fraction
of the bandwidth roofline (bytes moved over the ``np.copyto`` probe's rate at the same size, same
session) and speed-ups over the reference and the op's outside baseline; :func:`format_table`
prints them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .ops import OPS

PROBE = "np.copyto"  # implementation name of the bandwidth probe
REFERENCE = "reference"


def tag(*, op: str, fmt: str, size: str, impl: str, weights: int, nbytes: int, threads: int | None,
        pass_no: int = 0) -> dict:
    """The ``extra_info`` of one measurement: what was measured, how much work one call is
    (``weights``, ``nbytes`` moved), on how many threads (None: the kernel decides) and in which
    pass over the benchmarks (``pass_no``)."""
    return {
        "quantbench": True,
        "op": op,
        "format": fmt,
        "size": size,
        "impl": impl,
        "weights": weights,
        "bytes": nbytes,
        "threads": threads,
        "pass": pass_no,
    }


@dataclass
class Row:
    """One measured implementation of one op, format and size, with what :func:`derive` adds."""

    info: dict
    median_s: float
    spread: float  # IQR / median
    weights_per_s: float = 0.0
    gb_per_s: float = 0.0
    roofline: float | None = None
    vs_reference: float | None = None
    vs_baseline: float | None = None


def derive(measurements: Iterable[tuple[dict, float, float]]) -> list[Row]:
    """``(extra_info, median seconds, IQR seconds)`` triples -> rows with the derived figures,
    which are also written back into each ``extra_info`` (so they land in the saved JSON)."""
    rows = [Row(info, median, iqr / median if median else 0.0) for info, median, iqr in measurements]
    probe = {r.info["size"]: r for r in rows if r.info["impl"] == PROBE}
    by_key: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        by_key.setdefault((r.info["op"], r.info["format"], r.info["size"]), {})[r.info["impl"]] = r
    for r in rows:
        r.weights_per_s = r.info["weights"] / r.median_s
        r.gb_per_s = r.info["bytes"] / r.median_s / 1e9
    for r in rows:
        if r.info["impl"] == PROBE:
            continue
        p = probe.get(r.info["size"])
        if p is not None:
            r.roofline = r.gb_per_s / p.gb_per_s
        peers = by_key[(r.info["op"], r.info["format"], r.info["size"])]
        if REFERENCE in peers and r.info["impl"] != REFERENCE:
            r.vs_reference = peers[REFERENCE].median_s / r.median_s
        base = OPS[r.info["op"]].outside_baseline if r.info["op"] in OPS else None
        if base in peers and r.info["impl"] != base:
            r.vs_baseline = peers[base].median_s / r.median_s
        r.info.update(
            weights_per_s=r.weights_per_s,
            gb_per_s=r.gb_per_s,
            roofline=r.roofline,
            speedup_vs_reference=r.vs_reference,
            speedup_vs_baseline=r.vs_baseline,
            baseline=base,
            relative_spread=r.spread,
        )
    return rows


def _fmt(v: float | None, pattern: str) -> str:
    return "-" if v is None else pattern.format(v)


def format_table(rows: list[Row]) -> list[str]:
    """The terminal table: one line per measured implementation, grouped by format, op and size.
    The outside-baseline columns appear only when a baseline was measured."""
    with_base = any(r.vs_baseline is not None for r in rows)
    header = (
        f"{'format':<6} {'op':<11} {'size':<8} {'impl':<18} {'G w/s':>8} {'GB/s':>7} "
        f"{'roofline':>8} {'x ref':>8} " + (f"{'x base':>7} {'base':<10} " if with_base else "") + f"{'IQR/med':>7}"
    )
    lines = [header, "-" * len(header)]
    order = sorted(rows, key=lambda r: (r.info["format"], r.info["op"], r.info["size"], -r.weights_per_s))
    for r in order:
        i = r.info
        base = i.get("baseline", "") if r.vs_baseline is not None else ""
        lines.append(
            f"{i['format']:<6} {i['op']:<11} {i['size']:<8} {i['impl']:<18} {r.weights_per_s / 1e9:>8.3f} "
            f"{r.gb_per_s:>7.2f} {_fmt(r.roofline, '{:.2f}'):>8} {_fmt(r.vs_reference, '{:.1f}x'):>8} "
            + (f"{_fmt(r.vs_baseline, '{:.2f}x'):>7} {base:<10} " if with_base else "")
            + f"{r.spread:>7.3f}"
        )
    return lines
