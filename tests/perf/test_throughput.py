"""Throughput of every op x format at a cache-resident size, at 16M weights (4096 x 4096), at
Gemma 3 270M's FFN shape (2048 rows of 640 weights: the 32-weight formats only) and at 256 x 256
(what a call costs besides its work), beside the reference, the outside baselines (gguf-py,
libgguf, NumPy's BLAS matvec) and an np.copyto probe of the same output size, all in one run.
Run with ``pytest tests/perf --perf``.

The inputs and the timing are the plugin's (``pytest_quantbench.workloads``): weight-like values,
rotated past the last-level cache at 16M, two untimed calls before pytest-benchmark's rounds."""

from __future__ import annotations

import functools
import itertools

import gguf
import numpy as np
import pytest

import quantbench_kernels as qk
from pytest_quantbench import workloads
from pytest_quantbench.options import NAMED_SIZES, Size
from pytest_quantbench.strategies import weight_like
from pytest_quantbench.table import LLAMACPP, PROBE, REFERENCE, is_llamacpp, tag
from quantbench import llamacpp

pytestmark = pytest.mark.perf

SIZES = [Size(label, rows, cols) for label, (rows, cols) in NAMED_SIZES.items()] + [
    Size("2048x640", 2048, 640), Size("256x256", 256, 256)]
DOT = [f.name for f in qk.formats("gemv")]
THREADS = {"numba-1t": 1, "numba-2t": 2, REFERENCE: 1, "llama.cpp-1t": 1, "llama.cpp-2t": 2}
OURS = ("numba-1t", "numba-2t")  # the rows that time llama.cpp's kernel in between their rounds


@functools.lru_cache(maxsize=4)
def _workload(name: str, op: str, size: Size) -> workloads.Workload:
    return workloads.build(qk.get_format(name), op, size)


def _measure(benchmark, request, name: str, op: str, size: Size, impl: str, fn, threads, rounds=None,
             llamacpp_fn=None) -> None:
    """Time ``fn`` on the workload. For our kernels' rows (:data:`OURS`), ``llamacpp_fn``
    (llama.cpp's kernel of the op, same arguments), if given, is timed in between the rounds on the
    input half a rotation away, as an A/B baseline is: the table's ``x llama.cpp`` of the row then
    comes from those pairs (conftest.py)."""
    unfit = size.unfit_for(qk.get_format(name))
    if unfit:
        pytest.skip(unfit)
    work = _workload(name, op, size)
    info = tag(op=op, fmt=name, size=size.label, impl=impl, weights=work.n_weights, nbytes=work.nbytes,
               threads=threads)
    paired = {LLAMACPP: work.opposite_caller(llamacpp_fn)} if llamacpp_fn is not None and impl in OURS else None
    workloads.measure(benchmark, work, fn, info, request.config, rounds=rounds, paired=paired)


def _llamacpp_kernel(op: str, name: str):
    """llama.cpp's kernel of ``op`` for ``name`` (:mod:`quantbench.llamacpp`), or why there is none."""
    if why := llamacpp.unavailable_reason():
        return None, why
    fn = getattr(llamacpp.kernels(name), op)
    return (fn, None) if fn is not None else (None, f"llama.cpp has no {op} of {name}")


def _theirs(call, why: str | None):
    """A llama.cpp row's call, or its skip."""
    if call is None:
        pytest.skip(why)
    return call


def _by_backend(op: str, name: str, impl: str):
    """The package's kernel of ``op`` as numba-1t, numba-2t or the reference, with the kernel signature."""
    if impl == REFERENCE:
        return lambda *args: getattr(qk, op)(*args, name, backend="reference")
    return lambda *args: getattr(qk, op)(*args, name, threads=THREADS[impl])


@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.label)
def test_copyto_probe(benchmark, request, size):
    work = workloads.probe(size)
    info = tag(op="copyto", fmt="-", size=size.label, impl=PROBE, weights=work.n_weights, nbytes=work.nbytes,
               threads=1)
    workloads.measure(benchmark, work, np.copyto, info, request.config)


@pytest.mark.parametrize("impl", ["numba-1t", "numba-2t", REFERENCE, "gguf-py", "llama.cpp-1t"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.label)
@pytest.mark.parametrize("name", DOT)
def test_dequantize(benchmark, request, name, size, impl):
    fmt = qk.get_format(name)
    out = np.empty((size.weights // fmt.block_weights, fmt.block_weights), np.float32)
    to_float, why = _llamacpp_kernel("dequantize", name)
    theirs = None if to_float is None else (lambda raw: to_float(raw, out=out.reshape(-1)))  # noqa: E731
    if impl == "gguf-py":
        # gguf-py's fastest input shape: rows of the matrix; it allocates its output.
        fn = lambda raw: gguf.quants.dequantize(raw.reshape(size.rows, -1), fmt.qtype)  # noqa: E731
    elif impl == REFERENCE:
        fn = lambda raw: qk.dequantize(raw, name, backend="reference", out=out)  # noqa: E731
    elif is_llamacpp(impl):
        fn = _theirs(theirs, why)
    else:
        fn = lambda raw: qk.dequantize(raw, name, threads=THREADS[impl], out=out)  # noqa: E731
    _measure(benchmark, request, name, "dequantize", size, impl, fn, THREADS.get(impl, 1), llamacpp_fn=theirs)


@pytest.mark.parametrize("impl", ["numba-1t", "numba-2t", REFERENCE, "libgguf", "llama.cpp-1t"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.label)
@pytest.mark.parametrize("name", DOT + ["Q8_K", "Q8_1"])
def test_quantize(benchmark, request, name, size, impl):
    if impl == REFERENCE and size.label == "16M":
        pytest.skip("the NumPy reference quantizer takes minutes at 16M weights: measured in cache only")
    theirs, why = _llamacpp_kernel("quantize", name)  # quantize_row_*_ref, as libgguf (in ggml's build)
    if impl == "libgguf":
        if name not in DOT:
            pytest.skip(f"libgguf has no {name} quantizer (an activation format)")
        libgguf = pytest.importorskip("libgguf", reason="libgguf wheels exist for CPython 3.11 x86-64 Linux only")
        qtype = int(qk.get_format(name).qtype)
        # One long row: libgguf spreads several rows over threads, one row runs on one thread.
        fn = lambda x: libgguf.quantize_rows(x.reshape(1, -1), qtype)  # noqa: E731
    elif is_llamacpp(impl):
        fn = _theirs(theirs, why)
    else:
        fn = _by_backend("quantize", name, impl)
    rounds = 3 if size.label == "16M" else None
    _measure(benchmark, request, name, "quantize", size, impl, fn, THREADS.get(impl, 1), rounds, llamacpp_fn=theirs)


@pytest.mark.parametrize("impl", ["numba-1t", "numba-2t", REFERENCE, "numpy-blas", "llama.cpp-1t", "llama.cpp-2t"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.label)
@pytest.mark.parametrize("name", DOT)
def test_gemv(benchmark, request, name, size, impl):
    # ggml's from_float of x once, then its vec_dot per row in a compiled loop (rows split over
    # two threads for llama.cpp-2t and beside numba-2t): no Python call per row is timed.
    gemv, why = _llamacpp_kernel("gemv", name)
    theirs = None if gemv is None else (lambda w, x: gemv(w, x, THREADS[impl]))  # noqa: E731
    if impl == "numpy-blas":
        # float32 W @ x with NumPy's BLAS on its default threads, its matrix (64 MB at 16M) rotated
        # through as many copies as the quantized weights are (workloads.copies).
        dense = weight_like(np.random.default_rng(0), (size.rows, size.cols))
        matrices = itertools.cycle([dense] + [dense.copy() for _ in range(workloads.copies(size, dense.nbytes) - 1)])
        fn = lambda w, x: next(matrices) @ x  # noqa: E731
    elif is_llamacpp(impl):
        fn = _theirs(theirs, why)
    else:
        fn = _by_backend("gemv", name, impl)
    _measure(benchmark, request, name, "gemv", size, impl, fn, THREADS.get(impl), llamacpp_fn=theirs)


@pytest.mark.parametrize("impl", ["numba-1t", REFERENCE])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: s.label)
@pytest.mark.parametrize("name", DOT)
def test_vec_dot(benchmark, request, name, size, impl):
    """One row holding all of the size's weights (x is quantized to the activation format first)."""
    backend = "reference" if impl == REFERENCE else "numba"
    fn = lambda w, x: qk.vec_dot(w, x, name, backend=backend)  # noqa: E731
    _measure(benchmark, request, name, "vec_dot", size, impl, fn, 1)
