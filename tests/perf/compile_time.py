"""Where a cold start's time goes: each format's kernels compiled in this process with Numba's
on-disk cache off (``QUANTBENCH_NUMBA_CACHE=0``, set here before the package is imported), in
seconds per format.

Each format runs what a first test touches: quantize, dequantize, quantize with an importance
matrix (where a Numba kernel exists) and gemv on float32 x, on one thread and on two (the serial
and the parallel kernels). Formats share helpers (the activation quantizers, the scale searches),
so the first format that needs one pays for it: compare totals, not one format across changes.

usage: .venv/bin/python tests/perf/compile_time.py [--formats Q4_0,Q4_K] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import os
import time

if __name__ == "__main__":  # run as a script (not imported by a test): before the package is imported
    os.environ["QUANTBENCH_NUMBA_CACHE"] = "0"

import numpy as np  # noqa: E402

import quantbench_kernels as qk  # noqa: E402
from quantbench.cli import thread_count  # noqa: E402


def _formats(text: str) -> list[str]:
    try:
        return [qk.get_format(name).name for name in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--formats", type=_formats, default=[f.name for f in qk.formats("quantize")], metavar="LIST",
                        help="comma-separated format names (default: every format with a quantizer)")
    parser.add_argument("--threads", type=thread_count, nargs="+", default=[1, 2], metavar="N",
                        help="thread counts to call with (default 1 2: the serial and the parallel kernels)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    names = args.formats
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for name in names:
        fmt = qk.get_format(name)
        x = (rng.standard_normal((3, 2 * fmt.block_weights)) * 0.1).astype(np.float32)
        t = time.perf_counter()
        for threads in args.threads:
            w = qk.quantize(x, name, threads=threads)
            qk.dequantize(w, name, threads=threads)
            if fmt.numba.quantize_imatrix is not None:
                qk.quantize(x, name, imatrix=np.ones(x.shape[1], np.float32), threads=threads)
            if fmt.numba.gemv is not None:
                qk.gemv(w, x[0], name, threads=threads)
        print(f"{name:<8} {time.perf_counter() - t:7.1f} s", flush=True)
    print(f"{'total':<8} {time.perf_counter() - start:7.1f} s")


if __name__ == "__main__":
    main()
