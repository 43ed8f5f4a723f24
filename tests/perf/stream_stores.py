"""Dequantize with non-temporal stores against plain ones, in one process: each format's kernel
called with ``stream`` true and false in turn, on outputs of 4, 16 and 64 MB (1M, 4M and 16M
weights in rows of 4096), the output reused and the input rotated through up to 6 copies, medians
of ``--rounds`` rounds. Also the same with a parallel read of the whole output after each call
(what a consumer pays when the output is not in the caches). What ``compilation.STREAM_FROM_BYTES``
was chosen from.

usage: .venv/bin/python tests/perf/stream_stores.py [--formats Q4_K,Q4_0] [--threads 1,2] [--rounds 12]
"""

from __future__ import annotations

import argparse
import importlib
import time

import numba
import numpy as np

import quantbench_kernels as qk
from quantbench.cli import positive_int, thread_count, weight_formats

SIZES = (1 << 20, 4 << 20, 16 << 20)  # weights
COPIES = 6


@numba.njit(parallel=True)
def _read(a: np.ndarray) -> float:
    s = 0.0
    for i in numba.prange(a.size):
        s += a.flat[i]
    return s


def parse_arguments(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str], list[int]]:
    """The command line, checked: (the options, the format names, the thread counts). A bad value
    exits with argparse's usage error naming it, before anything is built."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--formats", type=weight_formats, default="Q4_K,Q4_0")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=positive_int, default=12)
    args = p.parse_args(argv)
    threads = []
    for text in args.threads.split(","):
        try:
            threads.append(thread_count(text))
        except argparse.ArgumentTypeError as e:
            p.error(f"--threads: {e}")
    return args, args.formats, threads


def main() -> None:
    args, names, thread_counts = parse_arguments()
    numba.set_num_threads(max(thread_counts))
    rng = np.random.default_rng(0)
    print("streamed over plain (median time ratio); with a read of the output after each call")
    for name in names:
        fmt = qk.get_format(name)
        module = importlib.import_module(f"quantbench_kernels.qtypes.{name.lower()}")
        for threads in thread_counts:
            kernel = module._dequantize_serial if threads == 1 else module._dequantize_parallel
            for weights in SIZES:
                w = qk.quantize(rng.standard_normal((weights // 4096, 4096)).astype(np.float32) * 0.02, name)
                inputs = [w.reshape(-1, fmt.block_bytes).copy() for _ in range(COPIES)]
                out = np.empty((inputs[0].shape[0], fmt.block_weights), np.float32)
                alone: dict[bool, list[float]] = {False: [], True: []}
                read: dict[bool, list[float]] = {False: [], True: []}
                for stream in (False, True):  # compile, warm
                    kernel(inputs[0], out, stream)
                    _read(out)
                for _ in range(args.rounds):
                    for stream in (False, True):
                        for blocks in inputs:
                            t0 = time.perf_counter()
                            kernel(blocks, out, stream)
                            t1 = time.perf_counter()
                            _read(out)
                            alone[stream].append(t1 - t0)
                            read[stream].append(time.perf_counter() - t0)
                plain, streamed = np.median(alone[False]), np.median(alone[True])
                print(f"{name:<7} {threads}t {out.nbytes >> 20:>3} MB out: plain {weights / plain / 1e9:5.2f} G w/s, "
                      f"streamed {weights / streamed / 1e9:5.2f}: {plain / streamed:.2f}x; "
                      f"with a read after: {np.median(read[False]) / np.median(read[True]):.2f}x")


if __name__ == "__main__":
    main()
