"""asv benchmarks: time, throughput (G weights/s, GB/s) and roofline fraction of every op of every
registered format, at a cache-resident size and at 16M weights.

Formats and ops come from the registry (``quantbench_kernels.formats()``): a new format appears
here without edits. Each class warms the Numba JIT in ``setup``, so compile time is never timed
(``timeraw_import_and_compile`` measures it on its own). At 16M weights the inputs rotate among
copies whose total exceeds the last-level cache, as in ``pytest --quantbench``.

This file uses only ``quantbench_kernels``' public functions, not ``pytest_quantbench``'s helpers
(whose weight generator and input rotation it repeats in a few lines): asv runs the current suite
against past commits, whose packages lack helpers added since.
"""

from __future__ import annotations

import itertools
import time

import numpy as np

import quantbench_kernels as qk

SIZES = {"cache": (256, 4096), "16M": (4096, 4096)}  # rows x weights per row
LLC_BYTES = 32 << 20
ROUNDS = 7  # calls per track_ measurement; the median is reported


def formats_with(op: str) -> list[str]:
    needed = "gemv" if op == "vec_dot" else op
    return [f.name for f in qk.formats() if getattr(f.numba, needed) is not None]


def _weights(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_t(5, size=(rows, cols)) * 0.015).astype(np.float32)


def _copies(nbytes: int, size: str) -> int:
    return 1 if size == "cache" else max(1, min(16, -(-2 * LLC_BYTES // nbytes)))


def _median_seconds(fn, rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


class _Op:
    """Shared machinery: subclasses set ``op`` and build ``self.call`` (one kernel call on the next
    input), ``self.n_weights`` and ``self.nbytes`` (bytes one call must move) in ``prepare``."""

    op = ""
    param_names = ["format", "size"]
    timeout = 600

    def setup(self, fmt: str, size: str) -> None:
        self.fmt = qk.get_format(fmt)
        self.rows, self.cols = SIZES[size]
        self.n_weights = self.rows * self.cols
        self.prepare(size)
        self.call()  # compile (first Numba call) and warm up
        self.call()

    def prepare(self, size: str) -> None:
        raise NotImplementedError

    def _cycle(self, args: tuple, nbytes: int, size: str) -> None:
        inputs = [tuple(a.copy() for a in args) for _ in range(_copies(nbytes, size))]
        it = itertools.cycle(inputs)
        self._next = lambda: next(it)

    def _probe_gbps(self) -> float:
        """This process's memory bandwidth: np.copyto of as many float32 as the size has weights."""
        src = np.ones(self.n_weights, dtype=np.float32)
        dst = np.empty_like(src)
        np.copyto(dst, src)
        return 2 * dst.nbytes / _median_seconds(lambda: np.copyto(dst, src)) / 1e9

    def track_gweights_per_s(self, fmt: str, size: str) -> float:
        return self.n_weights / _median_seconds(self.call) / 1e9

    track_gweights_per_s.unit = "G weights/s"

    def track_gbytes_per_s(self, fmt: str, size: str) -> float:
        return self.nbytes / _median_seconds(self.call) / 1e9

    track_gbytes_per_s.unit = "GB/s"

    def track_roofline_fraction(self, fmt: str, size: str) -> float:
        """GB/s moved by the kernel over np.copyto's GB/s, both measured here, now."""
        return (self.nbytes / _median_seconds(self.call) / 1e9) / self._probe_gbps()

    track_roofline_fraction.unit = "fraction of np.copyto bandwidth"


class Dequantize(_Op):
    params = (formats_with("dequantize"), list(SIZES))

    def prepare(self, size: str) -> None:
        raw = qk.quantize(_weights(self.rows, self.cols), self.fmt)
        self.out = np.empty((self.rows, self.cols), dtype=np.float32)
        self._cycle((raw,), raw.nbytes, size)
        self.nbytes = raw.nbytes + self.out.nbytes
        self.call = lambda: qk.dequantize(*self._next(), self.fmt, threads=1, out=self.out)

    def time_dequantize(self, fmt: str, size: str) -> None:
        self.call()


class Quantize(_Op):
    """Quantize to every format, Q8_K (the activation format) included."""

    params = (formats_with("quantize"), list(SIZES))

    def prepare(self, size: str) -> None:
        x = _weights(self.rows, self.cols)
        self._cycle((x,), x.nbytes, size)
        self.nbytes = x.nbytes + self.n_weights * self.fmt.block_bytes // self.fmt.block_weights
        self.call = lambda: qk.quantize(*self._next(), self.fmt, threads=1)

    def time_quantize(self, fmt: str, size: str) -> None:
        self.call()


class Gemv(_Op):
    params = (formats_with("gemv"), list(SIZES))

    def prepare(self, size: str) -> None:
        w = qk.quantize(_weights(self.rows, self.cols), self.fmt)
        x = np.random.default_rng(1).standard_normal(self.cols).astype(np.float32)
        self._cycle((w,), w.nbytes, size)
        self.nbytes = w.nbytes + x.nbytes + 4 * self.rows
        self.call = lambda: qk.gemv(*self._next(), x, self.fmt, threads=1)

    def time_gemv(self, fmt: str, size: str) -> None:
        self.call()


class VecDot(_Op):
    """One row holding all of the size's weights; x is quantized to Q8_K first, as in llama.cpp."""

    params = (formats_with("vec_dot"), list(SIZES))

    def prepare(self, size: str) -> None:
        row = qk.quantize(_weights(1, self.n_weights), self.fmt).reshape(-1)
        x = np.random.default_rng(1).standard_normal(self.n_weights).astype(np.float32)
        self._cycle((row,), row.nbytes, size)
        self.nbytes = row.nbytes + x.nbytes
        self.call = lambda: qk.vec_dot(*self._next(), x, self.fmt)

    def time_vec_dot(self, fmt: str, size: str) -> None:
        self.call()


class PeakMemory:
    """Peak resident memory while dequantizing a 16M-weight tensor into a new array."""

    params = [formats_with("dequantize")]
    param_names = ["format"]

    def setup(self, fmt: str) -> None:
        self.raw = qk.quantize(_weights(*SIZES["16M"]), fmt)
        qk.dequantize(self.raw[:1], fmt)  # compile outside the measurement

    def peakmem_dequantize_16M(self, fmt: str) -> None:
        qk.dequantize(self.raw, fmt)


class ColdStart:
    """Import the kernels and compile the Q4_K kernels in a fresh interpreter, with Numba's
    on-disk cache (warm after the first run) and without it (every kernel compiled)."""

    params = [["cache", "no-cache"]]
    param_names = ["numba_cache"]
    repeat = (2, 4, 300.0)
    number = 1
    timeout = 900

    def timeraw_import_and_compile(self, numba_cache: str) -> str:
        return f"""
import os
os.environ["QUANTBENCH_NUMBA_CACHE"] = "{'1' if numba_cache == 'cache' else '0'}"
import numpy as np
import quantbench_kernels as qk
x = np.linspace(-1, 1, 1024, dtype=np.float32)
q = qk.quantize(x, "Q4_K", threads=1)
qk.dequantize(q, "Q4_K", threads=1)
qk.gemv(q.reshape(1, -1), x, "Q4_K", threads=1)
"""
