"""llama.cpp's own CPU dot kernels as pytest_quantbench kernels, through ``ggml-python``'s libggml.

For each k-quant: the vec_dot and gemv that ggml's CPU backend picks on this machine (AVX2 or
AVX-512 here) and its scalar ``ggml_vec_dot_*_q8_K_generic``, which gcc compiles with fused
multiply-adds. Activations are quantized by ggml's own ``from_float`` of Q8_K, as llama.cpp does.
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

FORMATS = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
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


def _functions(name: str, generic: bool) -> tuple[Callable, Callable]:
    traits = ggml.ggml_get_type_traits_cpu(getattr(ggml, f"GGML_TYPE_{name}")).contents
    act = ggml.ggml_get_type_traits_cpu(traits.vec_dot_type).contents
    if generic:
        dot = VEC_DOT(_address(getattr(_CPU, f"ggml_vec_dot_{name.lower().replace('_k', '_K')}_q8_K_generic")))
    else:
        dot = VEC_DOT(_address(traits.vec_dot))
    return dot, FROM_FLOAT(_address(act.from_float))


def _gemv(name: str, generic: bool) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    dot, from_float = _functions(name, generic)
    act_bytes = qk.get_format("Q8_K").block_bytes

    def gemv(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        w = np.ascontiguousarray(w, dtype=np.uint8)
        x = np.ascontiguousarray(x, dtype=np.float32)
        act = np.empty(x.size // 256 * act_bytes, dtype=np.uint8)
        from_float(x.ctypes.data, act.ctypes.data, x.size)
        out = np.empty(w.shape[0], dtype=np.float32)
        for r in range(w.shape[0]):
            dot(x.size, out[r:].ctypes.data, 0, w[r].ctypes.data, 0, act.ctypes.data, 0, 1)
        return out

    return gemv


def kernels(name: str = "ggml") -> list[Kernel]:
    """``name`` (ggml's pick for this CPU) and ``name + "-generic"``: vec_dot and gemv of every k-quant."""
    out = []
    for fmt in FORMATS:
        for suffix, generic in (("", False), ("-generic", True)):
            gemv = _gemv(fmt, generic)
            out.append(Kernel(f"{name}{suffix}", fmt, "gemv", gemv, threads=1))
            out.append(Kernel(f"{name}{suffix}", fmt, "vec_dot", lambda w, x, g=gemv: float(g(w.reshape(1, -1), x)[0]),
                              threads=1))
    return out
