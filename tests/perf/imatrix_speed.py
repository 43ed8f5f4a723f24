"""Quantizing with an importance matrix, this package's Numba kernels against llama.cpp's (libgguf's
``quantize_rows(x, qtype, imatrix=)``: its ``ggml_quantize_chunk``, one thread).

    .venv/bin/python tests/perf/imatrix_speed.py [--formats Q4_K,IQ4_NL] [--rounds 2]

A 512 x 2048 float32 matrix (standard normal x 0.02), importance uniform in [0, 1), the best of 5
calls per figure, ``--rounds`` rounds; a markdown table of milliseconds and ratios (llama.cpp's
time over ours: above 1 is faster) on one thread and on two.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import libgguf
import numpy as np

import quantbench_kernels as qk


def best_of(call: Callable[[], object], n: int = 5) -> float:
    """The shortest of ``n`` calls' seconds."""
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--formats", default=",".join(f.name for f in qk.formats("quantize_imatrix")
                                                      if f.activation is not None))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((512, 2048)) * 0.02).astype(np.float32)
    importance = rng.random(2048).astype(np.float32)
    print("| format | llama.cpp ms | Numba 1 thread ms (ratio) | Numba 2 threads ms (ratio) |")
    print("|---|---|---|---|")
    for name in args.formats.split(","):
        print(row(name, x, importance, args.rounds), flush=True)


def _ms_and_ratios(theirs: list[float], ours: list[float]) -> str:
    ms = " / ".join(f"{1e3 * t:.1f}" for t in ours)
    ratios = " / ".join(f"{a / b:.2f}x" for a, b in zip(theirs, ours, strict=True))
    return f"{ms} ({ratios})"


def row(name: str, x: np.ndarray, importance: np.ndarray, rounds: int) -> str:
    """One format's line of the table."""
    qtype = int(qk.get_format(name).qtype)
    qk.quantize(x[:2], name, imatrix=importance, threads=1)  # compile
    qk.quantize(x, name, imatrix=importance, threads=2)
    theirs, one, two = [], [], []
    for _ in range(rounds):
        theirs.append(best_of(lambda: libgguf.quantize_rows(x, qtype, imatrix=importance)))
        one.append(best_of(lambda: qk.quantize(x, name, imatrix=importance, threads=1)))
        two.append(best_of(lambda: qk.quantize(x, name, imatrix=importance, threads=2)))
    return (f"| {name} | {' / '.join(f'{1e3 * t:.1f}' for t in theirs)} | {_ms_and_ratios(theirs, one)} | "
            f"{_ms_and_ratios(theirs, two)} |")

if __name__ == "__main__":
    main()
