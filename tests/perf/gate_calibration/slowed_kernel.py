"""The gate calibration's test kernel; run.sh copies this file as conftest.py into a scratch project."""

import os
import time

import numpy as np

import quantbench_kernels as qk
from pytest_quantbench import Kernel

_BUFFERS = {}


def _buffer(n_blocks):
    # One output buffer per shape, reused: a fresh 64 MB array per call makes the timing depend on
    # glibc's mmap threshold, which differs from process to process.
    if n_blocks not in _BUFFERS:
        _BUFFERS[n_blocks] = np.empty((n_blocks, 256), dtype=np.float32)
    return _BUFFERS[n_blocks]


def slowed_dequantize(raw):
    # The product's one-thread kernel plus extra work: with SLOWDOWN=0.25 each call spins for a
    # further quarter of the time the kernel itself took, so the call is 25% slower.
    extra = float(os.environ.get("SLOWDOWN", "0"))
    start = time.perf_counter()
    out = qk.dequantize(raw, "Q4_K", threads=1, out=_buffer(len(raw)))
    if extra:
        until = start + (time.perf_counter() - start) * (1 + extra)
        while time.perf_counter() < until:
            pass
    return out


def pytest_quantbench_kernels():
    return [Kernel(name="timed", qtype="Q4_K", op="dequantize", fn=slowed_dequantize)]
