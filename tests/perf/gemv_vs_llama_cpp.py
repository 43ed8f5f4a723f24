"""This package's gemv against llama.cpp's (``quantbench.llamacpp``: its activation
quantization and ``vec_dot`` over the rows in a compiled loop) in one process, the two called in
turn round after round on copies of the same weights: per format, the best and the median time
of ``--rounds`` rounds of several calls each, and llama.cpp's time over ours for both.

Where ``pytest tests/perf --perf`` times one call per round (about 60 µs at 1M weights, where a
shared machine's noise moves single pairs by tens of percent), rounds of many calls here give
steadier ratios for the cache-resident sizes. ``--each`` runs the formats one at a time, so that a
format's weights stay in the L2 between calls (256 x 4096 Q4_K: 576 KB); without it every
format's weights are in the rotation (L3-resident). ``--rotate`` cycles each side through the
perf tests' copies of its weights (``workloads.copies``: past twice the L3 at 16M weights).

usage: .venv/bin/python tests/perf/gemv_vs_llama_cpp.py [--shape 256x4096] [--threads 1]
       [--rounds 21] [--formats Q4_K,Q6_K] [--each] [--rotate]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

import quantbench_kernels as qk
from pytest_quantbench import workloads
from pytest_quantbench.options import Size
from quantbench import llamacpp
from quantbench.cli import positive_int, thread_count, weight_formats


def compare(names: list[str], rows: int, cols: int, threads: int, rounds: int,
            rotate: bool) -> dict[str, tuple[float, ...]]:
    """{format: (ours best, llama.cpp best, ours median, llama.cpp median)}, seconds per call."""
    rng = np.random.default_rng(0)
    calls = {}
    for name in names:
        w = qk.quantize((rng.standard_normal((rows, cols)) * 0.02).astype(np.float32), name)
        x = rng.standard_normal(cols).astype(np.float32)
        n = workloads.copies(Size(f"{rows}x{cols}", rows, cols), w.nbytes) if rotate else 1
        ours, mine = itertools.cycle([w.copy() for _ in range(n)]), name  # copies each: neither reads the other's
        theirs, gemv = itertools.cycle([w.copy() for _ in range(n)]), llamacpp.kernels(name).gemv
        calls[name, "ours"] = (lambda ws=ours, x=x, name=mine: qk.gemv(next(ws), x, name, threads=threads))
        calls[name, "llama.cpp"] = (lambda ws=theirs, x=x, gemv=gemv: gemv(next(ws), x, threads))
    for call in calls.values():
        call()
    reps = max(3, int(3e6 / (rows * cols)))
    times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    for _ in range(rounds):
        for key, call in calls.items():
            start = time.perf_counter()
            for _ in range(reps):
                call()
            times[key].append((time.perf_counter() - start) / reps)
    return {name: (min(times[name, "ours"]), min(times[name, "llama.cpp"]),
                   float(np.median(times[name, "ours"])), float(np.median(times[name, "llama.cpp"])))
            for name in names}


def parse_arguments(argv: list[str] | None = None) -> tuple[argparse.Namespace, int, int, list[str]]:
    """The command line, checked: (the options, rows, cols, the format names). A bad value exits
    with argparse's usage error naming it, before anything is built."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="256x4096", help="ROWSxCOLS (default 256x4096: 1M weights)")
    p.add_argument("--threads", type=thread_count, default=1)
    p.add_argument("--rounds", type=positive_int, default=21)
    every = ",".join(f.name for f in qk.formats("gemv"))
    p.add_argument("--formats", type=weight_formats, default=every)
    p.add_argument("--each", action="store_true", help="one format at a time (its weights stay in the L2)")
    p.add_argument("--rotate", action="store_true", help="cycle through copies of the weights, as the perf tests do")
    args = p.parse_args(argv)
    rows, _, cols = args.shape.lower().partition("x")
    if not (rows.isdigit() and cols.isdigit() and int(rows) >= 1 and int(cols) >= 1):
        p.error(f"--shape must be ROWSxCOLS with both at least 1, got {args.shape!r}")
    size = Size(args.shape, int(rows), int(cols))
    for name in args.formats:
        if why := size.unfit_for(qk.get_format(name)):
            p.error(f"--shape: {why}")
    return args, size.rows, size.cols, args.formats


def main() -> None:
    args, rows, cols, names = parse_arguments()
    if why := llamacpp.unavailable_reason():
        raise SystemExit(f"gemv_vs_llama_cpp.py: {why}")
    groups = [[n] for n in names] if args.each else [names]
    print(f"gemv {rows} x {cols}, {args.threads} thread(s), {args.rounds} rounds, "
          f"{'one format at a time' if args.each else 'all formats in turn'}"
          f"{', weights rotated' if args.rotate else ''}: µs per call")
    print(f"{'format':<8} {'ours':>8} {'llama.cpp':>10} {'x best':>7} {'x median':>9}")
    for group in groups:
        for name, (ours, theirs, ours_med, theirs_med) in compare(group, rows, cols, args.threads, args.rounds,
                                                                        args.rotate).items():
            print(f"{name:<8} {ours * 1e6:>8.1f} {theirs * 1e6:>10.1f} {theirs / ours:>6.2f}x "
                  f"{theirs_med / ours_med:>8.2f}x")


if __name__ == "__main__":
    main()
