"""llama.cpp's own CPU kernels, for speed comparisons in the same run: through ``ggml-python``'s
libggml (a test extra; :func:`available` says whether it is installed).

Per format: ``to_float`` (dequantize), ``from_float_ref`` (the reference quantizer), the CPU
backend's ``from_float`` of the activation format (activation quantization) and a gemv made of
its ``vec_dot`` over rows. The row loop is compiled (Numba calls the C function by address), so
no Python call per row is timed: the gemv is what llama.cpp's matmul does for one token, on one
thread or split by rows over several (``threads`` as this package's kernels take it), the
activations quantized once per call as there.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import numba
import numpy as np

import quantbench_kernels as qk
from quantbench_kernels.compilation import dispatch

# Pointers passed as integers (the same registers on x86-64 and aarch64): Numba calls these.
# void to_float(const void *x, float *y, int64_t k); void from_float(const float *x, void *y, int64_t k)
CONVERT = ctypes.CFUNCTYPE(None, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int64)
# void vec_dot(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy, size_t by, int nrc)
VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_size_t,
                           ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int)


def unavailable_reason() -> str | None:
    """None where llama.cpp's kernels can be called here, else why not (for a skip reason)."""
    try:
        import ggml  # noqa: F401
    except ImportError:
        return "ggml-python (llama.cpp's libggml) is not installed: pip install -e '.[test]'"
    return None


@dataclass(frozen=True)
class LlamaCpp:
    """One format's llama.cpp kernels, with this package's call shapes: ``dequantize(raw,
    out=None)`` -> float32 (n_blocks * block_weights,) (into ``out`` if given), ``quantize(x)``
    and ``quantize_activation(x)`` -> uint8 blocks, ``gemv(w, x, threads)`` -> float32 (rows,);
    None where llama.cpp has no such kernel."""

    name: str
    dequantize: Callable[[np.ndarray], np.ndarray] | None
    quantize: Callable[[np.ndarray], np.ndarray] | None
    quantize_activation: Callable[[np.ndarray], np.ndarray] | None
    gemv: Callable[..., np.ndarray] | None


def _address(fn: object) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value or 0


@cache
def kernels(name: str) -> LlamaCpp:
    """llama.cpp's kernels of format ``name`` (a registry name, e.g. "Q4_K")."""
    import ggml

    if why := unavailable_reason():
        raise RuntimeError(why)
    ggml.ggml_cpu_init()
    fmt = qk.get_format(name)
    ggml_type = getattr(ggml, f"GGML_TYPE_{name}")
    traits = ggml.ggml_get_type_traits(ggml_type).contents
    cpu = ggml.ggml_get_type_traits_cpu(ggml_type).contents
    to_float, from_float_ref = (CONVERT(_address(fn)) if _address(fn) else None  # NULL: none
                                for fn in (traits.to_float, traits.from_float_ref))

    def dequantize(raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        n = raw.size // fmt.block_bytes * fmt.block_weights
        if out is None:
            out = np.empty(n, dtype=np.float32)
        if out.dtype != np.float32 or out.size != n or not out.flags.c_contiguous:
            raise ValueError(f"out must be C-contiguous float32 of {n} weights, got {out.dtype} {out.shape}")
        to_float(raw.ctypes.data, out.ctypes.data, n)
        return out

    def converter(fn: Callable, to: qk.BlockFormat) -> Callable[[np.ndarray], np.ndarray]:
        def convert(x: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
            if x.size % to.block_weights:  # ggml would abort the process
                raise ValueError(f"{x.size} values are not whole {to.name} blocks of {to.block_weights}")
            out = np.empty((x.size // to.block_weights, to.block_bytes), dtype=np.uint8)
            fn(x.ctypes.data, out.ctypes.data, x.size)
            return out
        return convert

    quantize = converter(from_float_ref, fmt) if from_float_ref else None
    dequantize_or_none = dequantize if to_float else None
    if not _address(cpu.vec_dot) or not fmt.supports("gemv"):
        return LlamaCpp(name, dequantize_or_none, quantize, None, None)
    act = qk.get_format(fmt.activation)
    act_traits = ggml.ggml_get_type_traits_cpu(cpu.vec_dot_type).contents
    quantize_activation = converter(CONVERT(_address(act_traits.from_float)), act)
    rows_serial, rows_parallel = _row_loops(VEC_DOT(_address(cpu.vec_dot)))

    def gemv(w: np.ndarray, x: np.ndarray, threads: int | None = 1) -> np.ndarray:
        w = np.ascontiguousarray(w, dtype=np.uint8).reshape(w.shape[0], -1)
        row_weights = w.shape[1] // fmt.block_bytes * fmt.block_weights
        if w.shape[1] % fmt.block_bytes or np.asarray(x).size != row_weights:  # C would read past the buffers
            raise ValueError(f"w's rows of {w.shape[1]} bytes are not whole {fmt.name} blocks, or x has "
                             f"{np.asarray(x).size} values where the rows hold {row_weights}")
        a = quantize_activation(x)
        out = np.empty(w.shape[0], dtype=np.float32)
        # Threads as this package's kernels take them (None: by size), through the same switch.
        dispatch(rows_serial, rows_parallel, threads, w.shape[0] * row_weights, w, a, out, row_weights)
        return out

    return LlamaCpp(name, dequantize_or_none, quantize, quantize_activation, gemv)


def _row_loops(dot: Callable) -> tuple[Callable, Callable]:
    """Compiled loops calling ``dot`` on each row: serial and split over Numba's threads. Built per
    format (the C function is a constant of the compiled code), not cached on disk."""

    @numba.njit(nogil=True)
    def serial(w: np.ndarray, act: np.ndarray, out: np.ndarray, n: int) -> None:
        base, a, o = w.ctypes.data, act.ctypes.data, out.ctypes.data
        for r in range(w.shape[0]):
            dot(n, o + 4 * r, 0, base + r * w.shape[1], 0, a, 0, 1)

    @numba.njit(nogil=True, parallel=True)
    def parallel(w: np.ndarray, act: np.ndarray, out: np.ndarray, n: int) -> None:
        base, a, o = w.ctypes.data, act.ctypes.data, out.ctypes.data
        for r in numba.prange(w.shape[0]):
            dot(n, o + 4 * r, 0, base + r * w.shape[1], 0, a, 0, 1)

    return serial, parallel
