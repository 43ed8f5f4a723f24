"""The gate calibration's test kernels; run.sh copies this file as conftest.py into a scratch project.

Two characters of kernel, each the product's one-thread kernel plus extra work: Q4_K dequantize
into a reused buffer (memory-bound) and Q4_K gemv (arithmetic-bound). Each call spins for a further
SLOWDOWN of the time the kernel itself took: with SLOWDOWN=0.05 every call is 5 % slower.
Registered as "timed" (slowed by SLOWDOWN: for the stored-baseline gate) and as "old" (never
slowed) and "new" (slowed by SLOWDOWN: for --quantbench-ab old,new).
"""

import os
import time

import numpy as np

import quantbench_kernels as qk
from pytest_quantbench import Kernel

_BUFFERS = {}


def _buffer(n_blocks):
    # One output buffer per shape, reused (and shared by "old" and "new"): a fresh 64 MB array per
    # call makes the timing depend on glibc's mmap threshold, which differs from process to process.
    if n_blocks not in _BUFFERS:
        _BUFFERS[n_blocks] = np.empty((n_blocks, 256), dtype=np.float32)
    return _BUFFERS[n_blocks]


def _slowed(kernel, extra):
    def slowed(*args):
        start = time.perf_counter()
        out = kernel(*args)
        if extra:
            until = start + (time.perf_counter() - start) * (1 + extra)
            while time.perf_counter() < until:
                pass
        return out

    return slowed


def _dequantize(raw):
    return qk.dequantize(raw, "Q4_K", threads=1, out=_buffer(len(raw)))


def _gemv(raw, x):
    return qk.gemv(raw, x, "Q4_K", threads=1)


def pytest_quantbench_kernels():
    slowdown = float(os.environ.get("SLOWDOWN", "0"))
    out = []
    for name, extra in (("timed", slowdown), ("old", 0.0), ("new", slowdown)):
        out.append(Kernel(name=name, qtype="Q4_K", op="dequantize", fn=_slowed(_dequantize, extra)))
        out.append(Kernel(name=name, qtype="Q4_K", op="gemv", fn=_slowed(_gemv, extra)))
    return out
