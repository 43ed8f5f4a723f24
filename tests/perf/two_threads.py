"""Two threads against one, quiet and beside busy neighbours: what each way of running the parallel
kernels costs, measured in processes of their own (a thread setting is read at start-up).

    .venv/bin/python tests/perf/two_threads.py [--seconds S] [--neighbours 0,1,2]

Per neighbour count (processes spinning on a core each, started before and stopped after), per
kernel (Q4_K dequantize of 1M weights, Q4_K gemv of 4096 x 4096), per way: the mean (what a
stream of calls gets: a collapse comes in episodes of calls 50-100 times slower) and the median of
one call's milliseconds over S seconds of calls. The ways:

- ``1 thread``: threads=1;
- ``static``: threads=None, always all threads (QUANTBENCH_AUTO_THREADS=static: before autothreads);
- ``auto``: threads=None, as quantbench_kernels.autothreads chooses;
- ``passive``: static, with libgomp's OMP_WAIT_POLICY=passive (its threads sleep between regions);
- ``chunk 1``: static, with Numba's parallel chunk size 1 (iterations handed out one at a time).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

WAYS = {
    "1 thread": ({}, "1", 0),
    "static": ({"QUANTBENCH_AUTO_THREADS": "static"}, "None", 0),
    "auto": ({}, "None", 0),
    "passive": ({"QUANTBENCH_AUTO_THREADS": "static", "OMP_WAIT_POLICY": "passive"}, "None", 0),
    "chunk 1": ({"QUANTBENCH_AUTO_THREADS": "static"}, "None", 1),
}

CHILD = """
import sys, time
import numba, numpy as np
import quantbench_kernels as qk
threads, seconds, chunk = eval(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
if chunk:
    numba.set_parallel_chunksize(chunk)
rng = np.random.default_rng(0)
small = qk.quantize(rng.standard_normal((1024, 1024)).astype(np.float32), "Q4_K", threads=1)
big = qk.quantize(rng.standard_normal((4096, 4096)).astype(np.float32), "Q4_K", threads=1)
x = rng.standard_normal(4096).astype(np.float32)
out = np.empty((1024, 1024), np.float32)
for name, call in [("dequantize 1M", lambda: qk.dequantize(small, "Q4_K", threads=threads, out=out)),
                   ("gemv 4096x4096", lambda: qk.gemv(big, x, "Q4_K", threads=threads))]:
    for _ in range(10):
        call()
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    ms = np.array(times) * 1e3
    print(f"{name}\\t{ms.mean():.3f}\\t{np.median(ms):.3f}\\t{len(ms)}")
"""

SPIN = "import time\nend = time.time() + float(__import__('sys').argv[1])\nwhile time.time() < end: pass"


def run(way: str, seconds: float) -> dict[str, tuple[float, float, int]]:
    env, threads, chunk = WAYS[way]
    result = subprocess.run([sys.executable, "-c", CHILD, threads, str(seconds), str(chunk)],
                            env={**os.environ, **env}, capture_output=True, text=True, check=True, timeout=600)
    out = {}
    for line in result.stdout.splitlines():
        name, mean, median, n = line.split("\t")
        out[name] = (float(mean), float(median), int(n))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--neighbours", default="0,1,2")
    args = parser.parse_args()
    print("| neighbours | way | dequantize 1M: mean ms a call (median) | gemv 4096x4096: mean ms a call (median) |")
    print("|---|---|---|---|")
    for n in (int(v) for v in args.neighbours.split(",")):
        total = args.seconds * 2 * len(WAYS) + 60
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN, str(total)]) for _ in range(n)]
        try:
            for way in WAYS:
                r = run(way, args.seconds)
                cells = [f"{r[k][0]:.3f} ({r[k][1]:.3f})" for k in ("dequantize 1M", "gemv 4096x4096")]
                print(f"| {n} | {way} | {cells[0]} | {cells[1]} |", flush=True)
        finally:
            for s in spinners:
                s.kill()
                s.wait()


if __name__ == "__main__":
    main()
