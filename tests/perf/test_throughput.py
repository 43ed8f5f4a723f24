"""Throughput of every op x format at a cache-resident size and at 16M weights (4096 x 4096),
beside the reference, the outside baselines (gguf-py, libgguf, NumPy's BLAS matvec) and an
np.copyto probe of the same output size, all in one run. Run with ``pytest tests/perf --perf``."""

from __future__ import annotations

import itertools

import gguf
import numpy as np
import pytest

import quantbench_kernels as qk
from pytest_quantbench.options import NAMED_SIZES
from pytest_quantbench.strategies import weight_like
from pytest_quantbench.throughput import PROBE, bytes_moved, tag

pytestmark = pytest.mark.perf

COLS = 4096
SIZES = {name: rows for name, (rows, _) in NAMED_SIZES.items()}  # rows of 4096 weights: 1M and 16M
ROTATE = 4  # at 16M, cycle through 4 copies of the input so that it never sits in the 32 MB L3
KQUANTS = [f.name for f in qk.formats() if f.supports("gemv")]


@pytest.fixture(scope="session")
def weights():
    return weight_like(np.random.default_rng(2026), (SIZES["16M"], COLS))


@pytest.fixture(scope="session")
def quantized(weights):
    return {name: qk.quantize(weights, name) for name in KQUANTS}


def _cycle(buffers):
    it = itertools.cycle(buffers)
    return lambda: next(it)


def _run(benchmark, fn, info, rounds=None):
    fn()  # compile (first Numba call) and warm up outside the timing
    benchmark.extra_info.update(info)
    if rounds is None:
        benchmark(fn)
    else:
        benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=0)


def _rows(size, n_rows, buffers):
    """Inputs for one size: at 16M, ROTATE distinct copies; in cache, one."""
    return [b[:n_rows].copy() for b in buffers] if size == "16M" else [buffers[0][:n_rows].copy()]


@pytest.mark.parametrize("size", SIZES)
def test_copyto_probe(benchmark, size):
    n = SIZES[size] * COLS
    src, dst = np.ones(n, np.float32), np.empty(n, np.float32)
    _run(benchmark, lambda: np.copyto(dst, src), tag("copyto", "-", size, PROBE, n, 2 * dst.nbytes, 1))


@pytest.mark.parametrize("impl", ["numba-1t", "numba-2t", "reference", "gguf-py"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", KQUANTS)
def test_dequantize(benchmark, quantized, name, size, impl):
    fmt = qk.get_format(name)
    rows = SIZES[size]
    n = rows * COLS
    nxt = _cycle(_rows(size, rows, [quantized[name]] * (ROTATE if size == "16M" else 1)))
    out = np.empty((rows, COLS), np.float32)
    fn = {
        "numba-1t": lambda: qk.dequantize(nxt(), name, threads=1, out=out),
        "numba-2t": lambda: qk.dequantize(nxt(), name, threads=2, out=out),
        "reference": lambda: qk.dequantize(nxt(), name, backend="reference", out=out),
        # gguf-py's fastest input shape: rows of 4096 weights; it allocates its output.
        "gguf-py": lambda: gguf.quants.dequantize(nxt(), fmt.qtype),
    }[impl]
    threads = {"numba-2t": 2}.get(impl, 1)
    _run(benchmark, fn, tag("dequantize", name, size, impl, n, bytes_moved("dequantize", fmt, n), threads))


@pytest.mark.parametrize("impl", ["numba-1t", "numba-2t", "reference", "libgguf"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", KQUANTS + ["Q8_K"])
def test_quantize(benchmark, weights, name, size, impl):
    fmt = qk.get_format(name)
    rows = SIZES[size]
    n = rows * COLS
    if impl == "reference" and size == "16M":
        pytest.skip("the NumPy reference quantizer takes minutes at 16M weights: measured in cache only")
    if impl == "libgguf":
        if name == "Q8_K":
            pytest.skip("libgguf has no Q8_K quantizer")
        libgguf = pytest.importorskip("libgguf", reason="libgguf wheels exist for CPython 3.11 x86-64 Linux only")
    x = weights[:rows]
    fn = {
        "numba-1t": lambda: qk.quantize(x, name, threads=1),
        "numba-2t": lambda: qk.quantize(x, name, threads=2),
        "reference": lambda: qk.quantize(x, name, backend="reference"),
        # One long row: libgguf spreads several rows over threads, one row runs on one thread.
        "libgguf": lambda: libgguf.quantize_rows(x.reshape(1, -1), int(fmt.qtype)),
    }[impl]
    threads = {"numba-2t": 2}.get(impl, 1)
    rounds = 3 if size == "16M" else None
    _run(benchmark, fn, tag("quantize", name, size, impl, n, bytes_moved("quantize", fmt, n), threads), rounds)


@pytest.mark.parametrize("impl", ["numba-1t", "numba-2t", "reference", "numpy-blas"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", KQUANTS)
def test_gemv(benchmark, weights, quantized, name, size, impl):
    fmt = qk.get_format(name)
    rows = SIZES[size]
    n = rows * COLS
    x = np.random.default_rng(1).standard_normal(COLS).astype(np.float32)
    copies = ROTATE if size == "16M" else 1
    w = _cycle(_rows(size, rows, [quantized[name]] * copies))
    if impl == "numba-1t":
        fn = lambda: qk.gemv(w(), x, name, threads=1)  # noqa: E731
    elif impl == "numba-2t":
        fn = lambda: qk.gemv(w(), x, name, threads=2)  # noqa: E731
    elif impl == "reference":
        fn = lambda: qk.gemv(w(), x, name, backend="reference")  # noqa: E731
    else:
        # float32 W @ x with NumPy's BLAS on its default threads; 64 MB at 16M, beyond the L3.
        dense = weights[:rows].copy()
        fn = lambda: dense @ x  # noqa: E731
    threads = {"numba-2t": 2, "numba-1t": 1, "reference": 1}.get(impl)
    _run(benchmark, fn, tag("gemv", name, size, impl, n, bytes_moved("gemv", fmt, n, rows), threads))


@pytest.mark.parametrize("impl", ["numba", "reference"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", KQUANTS)
def test_vec_dot(benchmark, weights, quantized, name, size, impl):
    """One row: 4096 weights in cache, one 16M-weight row at 16M (x is quantized to Q8_K first)."""
    fmt = qk.get_format(name)
    n = SIZES[size] * COLS
    row = quantized[name][: SIZES[size]].reshape(-1)
    x = weights[: SIZES[size]].reshape(-1)[::-1].copy()
    backend = "numba" if impl == "numba" else "reference"
    fn = lambda: qk.vec_dot(row, x, name, backend=backend)  # noqa: E731
    _run(benchmark, fn, tag("vec_dot", name, size, impl, n, bytes_moved("vec_dot", fmt, n), 1))
