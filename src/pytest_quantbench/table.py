"""What a kernel call moves and computes, and the throughput table built from measured times.

A measurement is tagged (``extra_info``) with its op, format, size label, implementation, weights
and bytes moved. :func:`derive` turns a session's measurements into weights/s, GB/s, the fraction
of the bandwidth roofline (bytes moved over the ``np.copyto`` probe's rate at the same size, same
session) and speed-ups over the reference, over a baseline the user names and over llama.cpp's
own kernels where they were measured; :func:`format_table` prints them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

PROBE = "np.copyto"  # implementation name of the bandwidth probe
REFERENCE = "reference"
LLAMACPP = "llama.cpp"  # llama.cpp's own kernels (:mod:`quantbench.llamacpp`): impl names start so


def tag(*, op: str, fmt: str, size: str, impl: str, weights: int, nbytes: int, threads: int | str | None,
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
    vs_llamacpp: float | None = None


def derive(measurements: Iterable[tuple[dict, float, float]], baselines: Sequence[str] = ()) -> list[Row]:
    """``(extra_info, median seconds, IQR seconds)`` triples -> rows with the derived figures,
    which are also written back into each ``extra_info`` (so they land in the saved JSON).
    ``baselines``: implementation names chosen by the user; each row's speed-up is over the first
    of them measured on the same op, format and size. Each row's speed over llama.cpp's kernel is
    ``extra_info["llamacpp_paired"]`` where the caller measured it (llama.cpp's calls timed in
    between the row's rounds: a ratio of neighbours in time), else over llama.cpp's measurement on
    the same op, format, size and thread count, else on one thread (its dequantize and quantize
    are one call on one thread)."""
    rows = [Row(info, median, iqr / median if median else 0.0) for info, median, iqr in measurements]
    probe = {r.info["size"]: r for r in rows if r.info["impl"] == PROBE}
    by_key: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        by_key.setdefault((r.info["op"], r.info["format"], r.info["size"]), {})[r.info["impl"]] = r
    llama = {(r.info["op"], r.info["format"], r.info["size"], r.info.get("threads")): r
             for r in rows if is_llamacpp(r.info["impl"])}
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
        base = next((b for b in baselines if b in peers), None)
        if base is not None and r.info["impl"] != base:
            r.vs_baseline = peers[base].median_s / r.median_s
        key = (r.info["op"], r.info["format"], r.info["size"])
        theirs = llama.get((*key, r.info.get("threads"))) or llama.get((*key, 1))
        if r.info.get("llamacpp_paired") is not None:
            r.vs_llamacpp = r.info["llamacpp_paired"]
        elif theirs is not None and not is_llamacpp(r.info["impl"]):
            r.vs_llamacpp = theirs.median_s / r.median_s
        r.info.update(
            weights_per_s=r.weights_per_s,
            gb_per_s=r.gb_per_s,
            roofline=r.roofline,
            speedup_vs_reference=r.vs_reference,
            speedup_vs_baseline=r.vs_baseline,
            speedup_vs_llamacpp=r.vs_llamacpp,
            baseline=base,
            relative_spread=r.spread,
        )
    return rows


def is_llamacpp(impl: str) -> bool:
    """Whether an implementation name is one of llama.cpp's kernels (a comparison, never gated)."""
    return impl.startswith(LLAMACPP)


def _fmt(v: float | None, pattern: str) -> str:
    return "-" if v is None else pattern.format(v)


def _threads(info: dict) -> str:
    t = info.get("threads")
    return "?" if t is None else str(t)


def format_table(rows: list[Row], conformance: Mapping[tuple[str, str, str], str] | None = None) -> list[str]:
    """The terminal table: one line per measured implementation, grouped by format, op and size,
    with its thread count ("?": not declared). The speed-up columns over a baseline appear only
    when one was measured. ``conformance``: (impl, format, op) -> what its conformance tests
    found, as a last column; an entry without measurements gets a line of its own."""
    with_base = any(r.vs_baseline is not None for r in rows)
    with_llama = any(r.vs_llamacpp is not None for r in rows)
    header = (
        f"{'format':<6} {'op':<10} {'impl':<18} {'threads':>7} {'size':<8} {'G w/s':>8} {'GB/s':>7} "
        f"{'roofline':>8} {'x ref':>7} " + (f"{'x base':>7} {'base':<12} " if with_base else "")
        + (f"{'x llama.cpp':>11} " if with_llama else "") + f"{'IQR/med':>7}"
        + ("  conformance" if conformance is not None else "")
    )
    lines = [header, "-" * len(header)]
    entries = [((r.info["format"], r.info["op"], r.info["size"], -r.weights_per_s, r.info["impl"]), r) for r in rows]
    measured = {(r.info["impl"], r.info["format"], r.info["op"]) for r in rows}
    for key in sorted(set(conformance or {}) - measured):
        entries.append(((key[1], key[2], "", 0.0, key[0]), key))
    for _, r in sorted(entries, key=lambda e: e[0]):
        if not isinstance(r, Row):
            impl, fmt, op = r
            lines.append(f"{fmt:<6} {op:<10} {impl:<18} {'':>7} {'(not measured)':<8}  {conformance[r]}")
            continue
        i = r.info
        base = (i.get("baseline") or "") if r.vs_baseline is not None else ""
        found = (conformance or {}).get((i["impl"], i["format"], i["op"]), "")
        lines.append(
            f"{i['format']:<6} {i['op']:<10} {i['impl']:<18} {_threads(i):>7} {i['size']:<8} "
            f"{r.weights_per_s / 1e9:>8.3f} {r.gb_per_s:>7.2f} {_fmt(r.roofline, '{:.2f}'):>8} "
            f"{_fmt(r.vs_reference, '{:.1f}x'):>7} "
            + (f"{_fmt(r.vs_baseline, '{:.2f}x'):>7} {base:<12} " if with_base else "")
            + (f"{_fmt(r.vs_llamacpp, '{:.2f}x'):>11} " if with_llama else "")
            + f"{r.spread:>7.3f}" + (f"  {found}" if conformance is not None else "")
        )
    return lines
