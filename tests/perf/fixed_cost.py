"""The cost of a gemv call besides its work: each format's ``qk.Matrix`` (weights checked once) on
one row of 256 weights and on 256 x 256, and ``qk.gemv`` (the weights checked on every call) on one
row, one thread, best of ``--rounds`` timings of ``--calls`` calls each, the formats interleaved
round by round.

A call on one row is the fixed cost (the Python call, the check of x, the kernel's call, x's
quantization to the activation format, the output's allocation) plus one row's work, so it bounds
the fixed cost from above.

usage: .venv/bin/python tests/perf/fixed_cost.py [--rounds 15] [--calls 3000]
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np

import quantbench_kernels as qk
from quantbench.cli import positive_int

SHAPES = ((1, 256), (256, 256))


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a count below 1 is a usage error naming it."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=positive_int, default=15)
    p.add_argument("--calls", type=positive_int, default=3000)
    return p.parse_args(argv)


def main() -> None:
    args = parse_arguments()
    rng = np.random.default_rng(0)
    calls = {}
    for fmt in qk.formats("gemv"):
        for rows, cols in SHAPES:
            m = qk.Matrix(qk.quantize((rng.standard_normal((rows, cols)) * 0.02).astype(np.float32), fmt), fmt)
            x = rng.standard_normal(cols).astype(np.float32)
            m(x, 1)  # compile
            calls[fmt.name, rows] = functools.partial(m, x, 1)
            if rows == 1:
                calls[fmt.name, "gemv"] = functools.partial(qk.gemv, m.w.reshape(rows, -1), x, fmt.name, threads=1)
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(args.rounds):
        for key, call in calls.items():
            start = time.perf_counter()
            for _ in range(args.calls):
                call()
            best[key] = min(best[key], (time.perf_counter() - start) / args.calls)
    print(f"qk.Matrix(w)(x, threads=1) and qk.gemv(w, x, name, threads=1), best of {args.rounds} x "
          f"{args.calls} calls, in microseconds")
    print(f"{'format':<8} {'Matrix 1 x 256':>15} {'256 x 256':>10} {'gemv 1 x 256':>13}")
    for name in dict.fromkeys(n for n, _ in calls):
        us = [1e6 * best[name, key] for key in (1, 256, "gemv")]
        print(f"{name:<8} {us[0]:>15.2f} {us[1]:>10.2f} {us[2]:>13.2f}")


if __name__ == "__main__":
    main()
