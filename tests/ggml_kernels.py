"""llama.cpp's own CPU dot kernels as pytest_quantbench kernels, through ``ggml-python``'s libggml.

For each format with a dot product: the vec_dot and gemv that ggml's CPU backend picks on this
machine (AVX2 or AVX-512 here) and its scalar ``ggml_vec_dot_*_generic``, which gcc compiles with
fused multiply-adds. Activations are quantized by ggml's own ``from_float`` of the activation
format (Q8_K, Q8_0 or Q8_1), as llama.cpp does.
Imported only where ``ggml`` is installed (``pytest.importorskip``).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

import ggml
import numpy as np

import quantbench_kernels as qk
from pytest_quantbench import Kernel

FORMATS = tuple(f.name for f in qk.formats("gemv"))
# void vec_dot(int n, float *s, size_t bs, const void *vx, size_t bx, const void *vy, size_t by, int nrc)
VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                           ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
# void from_float(const float *x, void *y, int64_t k)
FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)

ggml.ggml_cpu_init()
_CPU = ctypes.CDLL(os.path.join(os.path.dirname(ggml.__file__), "lib", "libggml-cpu.so"))


def _address(fn: object) -> int:
    # Wrapping a CDLL function object in a CFUNCTYPE prototype segfaults: go through its address.
    return ctypes.cast(fn, ctypes.c_void_p).value


def _c_name(name: str) -> str:
    """A format's name as llama.cpp's functions spell it: q4_0, iq4_xs, q4_K, q8_K."""
    low = name.lower()
    return low[:-2] + "_K" if low.endswith("_k") else low


def _functions(name: str, generic: bool) -> tuple[Callable, Callable]:
    traits = ggml.ggml_get_type_traits_cpu(getattr(ggml, f"GGML_TYPE_{name}")).contents
    act = ggml.ggml_get_type_traits_cpu(traits.vec_dot_type).contents
    if generic:
        symbol = f"ggml_vec_dot_{_c_name(name)}_{_c_name(qk.get_format(name).activation)}_generic"
        dot = VEC_DOT(_address(getattr(_CPU, symbol)))
    else:
        dot = VEC_DOT(_address(traits.vec_dot))
    return dot, FROM_FLOAT(_address(act.from_float))


def _gemv(name: str, generic: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    dot, from_float = _functions(name, generic)
    act_fmt = qk.get_format(qk.get_format(name).activation)

    def gemv(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        w = np.ascontiguousarray(w, dtype=np.uint8)
        x = np.ascontiguousarray(x, dtype=np.float32)
        act = np.empty(x.size // act_fmt.block_weights * act_fmt.block_bytes, dtype=np.uint8)
        from_float(x.ctypes.data, act.ctypes.data, x.size)
        out = np.empty(w.shape[0], dtype=np.float32)
        for r in range(w.shape[0]):
            dot(x.size, out[r:].ctypes.data, 0, w[r].ctypes.data, 0, act.ctypes.data, 0, 1)
        return out

    return gemv


def from_float(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """ggml's CPU ``from_float`` of the format ``name`` (for IQ4_NL: ``quantize_row_iq4_nl_ref``, no
    scale search): float32 x (n,) -> uint8 (n / block_weights * block_bytes,)."""
    fmt = qk.get_format(name)
    fn = FROM_FLOAT(_address(ggml.ggml_get_type_traits_cpu(getattr(ggml, f"GGML_TYPE_{name}")).contents.from_float))

    def quantize(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.empty(x.size // fmt.block_weights * fmt.block_bytes, dtype=np.uint8)
        fn(x.ctypes.data, out.ctypes.data, x.size)
        return out

    return quantize


def wrong_on_a_plain_row() -> list[tuple[str, str]]:
    """(kernel name suffix, format) of the dots that this libggml build gets wrong on one plain row:
    a ramp from -1 to 1 quantized by this package, dotted with a ramp activation, off the
    reference backend's gemv by more than 1 % of the sum of the terms' magnitudes (a rounding
    error is a millionth of it). A witness that is independent of Hypothesis' draws and of the
    rounding bound: gcc 12 vectorises some generic dots into wrong code (on CPUs with AVX-VNNI it
    turns Q5_0's signed quants into unsigned bytes for vpdpbusd), and the conformance run must
    report exactly those kernels as failing."""
    wrong = []
    for fmt in FORMATS:
        n = 2 * qk.get_format(fmt).block_weights
        w = qk.quantize(np.linspace(-1, 1, n, dtype=np.float32), fmt).reshape(1, -1)
        x = np.linspace(-2, 3, n, dtype=np.float32)
        expected = float(qk.gemv(w, x, fmt, backend="reference")[0])
        scale = float(np.abs(qk.dequantize(w, fmt, backend="reference")).ravel() @ np.abs(x))
        for suffix, generic in (("", False), ("-generic", True)):
            if abs(float(_gemv(fmt, generic)(w, x)[0]) - expected) > 0.01 * scale:
                wrong.append((suffix, fmt))
    return wrong


def kernels(name: str = "ggml") -> list[Kernel]:
    """``name`` (ggml's pick for this CPU) and ``name + "-generic"``: vec_dot and gemv of every format."""
    out = []
    for fmt in FORMATS:
        for suffix, generic in (("", False), ("-generic", True)):
            gemv = _gemv(fmt, generic)
            out.append(Kernel(f"{name}{suffix}", fmt, "gemv", gemv, threads=1))
            out.append(Kernel(f"{name}{suffix}", fmt, "vec_dot", lambda w, x, g=gemv: float(g(w.reshape(1, -1), x)[0]),
                              threads=1))
    return out
