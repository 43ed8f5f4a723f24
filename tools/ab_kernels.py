"""Time this tree's kernels against another checkout's, in one process, rounds interleaved.

    git worktree add /tmp/before HEAD~1
    python tools/ab_kernels.py /tmp/before Q4_0,Q4_K 15

Both packages are imported side by side (the other one under another name); every case runs once
in each before timing, the results are compared bit for bit, then each round times every case of
both in turn and the best round counts. Prints before / after time per case: above 1, this tree is
faster. A 2-vCPU VM moves a case by 5-10 % between runs: run it twice.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import quantbench_kernels as after
from pytest_quantbench.registration import import_from


def _cases(lib, fmt: str, rng: np.random.Generator) -> list[tuple[str, Callable[[], object], int]]:
    x = rng.standard_normal((256, 4096)).astype(np.float32)
    raw = lib.quantize(x, fmt)
    v = rng.standard_normal(4096).astype(np.float32)
    m = lib.Matrix(raw, fmt)
    small = lib.Matrix(raw[:1, : raw.shape[1] // 16], fmt)
    return [
        ("gemv 1 x 256, 1 thread", lambda: small(v[:256], 1), 2000),
        ("gemv 256 x 4096, 1 thread", lambda: m(v, 1), 50),
        ("gemv 256 x 4096, 2 threads", lambda: m(v, 2), 50),
        ("quantize 64 x 4096, 1 thread", lambda: lib.quantize(x[:64], fmt, threads=1), 3),
        ("quantize 64 x 4096, 2 threads", lambda: lib.quantize(x[:64], fmt, threads=2), 3),
        ("dequantize 256 x 4096, 1 thread", lambda: lib.dequantize(raw, fmt, threads=1), 10),
        ("dequantize 256 x 4096, 2 threads", lambda: lib.dequantize(raw, fmt, threads=2), 10),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", type=Path, help="the other checkout (its src/quantbench_kernels)")
    parser.add_argument("formats", help="comma-separated format names, e.g. Q4_0,Q4_K")
    parser.add_argument("rounds", type=int, nargs="?", default=15)
    args = parser.parse_args(argv)
    package = args.other / "src" / "quantbench_kernels"
    if not (package / "__init__.py").is_file():
        parser.error(f"{package} is not a quantbench_kernels package")
    before = import_from(package, "quantbench_kernels_before")
    times: dict[tuple[str, str, str], float] = {}
    cases = []
    for fmt in args.formats.split(","):
        for name, lib in (("before", before), ("after", after)):
            for what, fn, calls in _cases(lib, fmt, np.random.default_rng(0)):
                cases.append((fmt, what, name, fn, calls))
    results = {}
    for fmt, what, _name, fn, _ in cases:
        results.setdefault((fmt, what), []).append(np.asarray(fn()))
    for (fmt, what), (a, b) in results.items():
        if a.tobytes() != b.tobytes():
            print(f"{fmt} {what}: the results differ", file=sys.stderr)
            return 1
    for _ in range(args.rounds):
        for fmt, what, name, fn, calls in cases:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            elapsed = (time.perf_counter() - start) / calls
            key = (fmt, what, name)
            times[key] = min(times.get(key, elapsed), elapsed)
    for fmt, what in results:
        b, a = times[(fmt, what, "before")], times[(fmt, what, "after")]
        print(f"{fmt:7s} {what:34s} before {b * 1e6:10.2f} us  after {a * 1e6:10.2f} us  before/after {b / a:5.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
