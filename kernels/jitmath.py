"""Numba building blocks shared by the format kernels, and the thread-count policy.

Everything here runs in nopython mode with ``fastmath=False`` (no FMA contraction, no reassociation),
``error_model="numpy"`` (x / 0 gives inf or NaN as in C, instead of raising ZeroDivisionError)
and float32 constants, so that the kernels round exactly as the NumPy reference does.
Numba has no float16 on the CPU: f16 values are decoded and encoded by hand.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from . import simd

F32 = np.float32


def _install_cache_locator() -> bool:
    """Make Numba's on-disk cache of this package's kernels safe to use.

    Numba keys a cached kernel on its own source file only, but the kernels inline helpers from
    other modules (this one): editing a helper would leave stale machine code in the cache. This
    locator stamps every kernel of the package with a hash of all the package's sources (and of the
    vector-IR spelling that ``simd`` chose) instead, so any edit recompiles. It relies on Numba's
    cache-locator classes; if they are not where this expects, caching is simply turned off.
    """
    from numba.core import caching

    in_tree = getattr(caching, "InTreeCacheLocator", None) or getattr(caching, "_InTreeCacheLocator", None)
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    if in_tree is None or impl is None or not isinstance(getattr(impl, "_locator_classes", None), list):
        return False
    package = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256(simd.CODEGEN.encode())
    for path in sorted(glob.glob(os.path.join(package, "**", "*.py"), recursive=True)):
        with open(path, "rb") as f:
            digest.update(path[len(package):].encode() + b"\0" + f.read())
    stamp = digest.hexdigest()

    class PackageSourcesLocator(in_tree):  # type: ignore[misc, valid-type]
        def get_source_stamp(self) -> str:
            return stamp

        @classmethod
        def from_function(cls, py_func, py_file):  # type: ignore[no-untyped-def]
            if not os.path.abspath(py_file).startswith(package + os.sep):
                return None
            return super().from_function(py_func, py_file)

    if not any(c.__name__ == "PackageSourcesLocator" for c in impl._locator_classes):
        impl._locator_classes.insert(0, PackageSourcesLocator)
    return True


# QUANTBENCH_NUMBA_CACHE=0 turns the on-disk cache of compiled kernels off.
CACHE = os.environ.get("QUANTBENCH_NUMBA_CACHE", "1") != "0" and _install_cache_locator()

# Work (in weights) below which the serial kernel is used when the caller leaves ``threads`` unset.
PARALLEL_MIN_WEIGHTS = 1 << 20

# Parallel kernels split rows (or blocks) into this many contiguous chunks, each with its own
# scratch buffers; a constant (not the thread count) so that the kernels stay cacheable.
PARALLEL_CHUNKS = 64


def jit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``numba.njit`` with this project's settings: exact float semantics, cached."""
    return numba.njit(cache=CACHE, fastmath=False, error_model="numpy", nogil=True)(fn)


def pjit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Like :func:`jit`, with ``parallel=True`` for ``prange`` loops."""
    return numba.njit(cache=CACHE, fastmath=False, error_model="numpy", nogil=True, parallel=True)(fn)


def inline(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A helper that Numba inlines into its callers (no call overhead in inner loops)."""
    return numba.njit(cache=CACHE, fastmath=False, error_model="numpy", inline="always")(fn)


# POW2[e] = 2**(e - 25): the weight of a normal f16's integer significand (1024 + mantissa).
_POW2 = np.array([2.0 ** (e - 25) for e in range(32)], dtype=np.float32)
_TWO_M24 = F32(2.0**-24)


@inline
def f16_to_f32(h: int) -> np.float32:
    """Decode the f16 bit pattern ``h`` (0..65535): normals, subnormals, +/-0, +/-inf, NaN."""
    e = (h >> 10) & 0x1F
    m = h & 0x3FF
    if e == 0:
        v = F32(m) * _TWO_M24
    elif e == 31:
        v = F32(np.inf) if m == 0 else F32(np.nan)
    else:
        v = F32(m | 0x400) * _POW2[e]
    return -v if h & 0x8000 else v


@inline
def read_f16(buf: np.ndarray, offset: int) -> np.float32:
    """The little-endian f16 at ``buf[offset:offset + 2]``, as float32."""
    return f16_to_f32(np.int32(buf[offset]) | (np.int32(buf[offset + 1]) << 8))


@inline
def f32_to_f16_bits(v: np.float32) -> int:
    """Round ``v`` to the nearest f16 (ties to even, overflow to inf); return its bit pattern.

    Matches NumPy's ``astype(np.float16)`` except that every NaN encodes as 0x7E00.
    """
    if v != v:
        return 0x7E00
    sign = 0x8000 if (v < 0 or (v == 0 and math.copysign(1.0, v) < 0)) else 0
    a = abs(np.float64(v))
    if a >= 65520.0:  # halfway between 65504 (the largest f16) and 65536: ties go to inf
        return sign | 0x7C00
    if a < 6.103515625e-05:  # below 2**-14: subnormal, in steps of 2**-24 (1024 steps = 2**-14)
        return sign | int(np.rint(a * 16777216.0))
    _, ex = math.frexp(a)  # a = mant * 2**ex with mant in [0.5, 1)
    q = int(np.rint(math.ldexp(a, 11 - ex)))  # 11-bit significand in [1024, 2048], exact scaling
    if q == 2048:
        q = 1024
        ex += 1
    return sign | ((ex + 14) << 10) | (q - 1024)


@inline
def write_f16(buf: np.ndarray, offset: int, v: np.float32) -> None:
    """Store ``v`` rounded to f16, little-endian, at ``buf[offset:offset + 2]``."""
    bits = f32_to_f16_bits(v)
    buf[offset] = bits & 0xFF
    buf[offset + 1] = bits >> 8


@inline
def nearest_int(f: np.float32) -> np.int32:
    """llama.cpp's ``nearest_int`` (see :func:`quantbench_kernels.refmath.nearest_int`)."""
    v = np.float32(f + F32(12582912.0))
    bits = np.int32(float_bits(v))
    return np.int32((bits & 0x007FFFFF) - 0x00400000)


def _bitcast(src, dst, doc: str):  # type: ignore[no-untyped-def]
    @numba.extending.intrinsic
    def cast(typingctx, v):  # type: ignore[no-untyped-def]
        if v != src:
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    cast.__doc__ = doc
    return cast


float_bits = _bitcast(numba.types.float32, numba.types.int32, "Reinterpret a float32 as int32 (C's memcpy).")
bits_float = _bitcast(numba.types.int32, numba.types.float32, "Reinterpret an int32 as float32 (C's memcpy).")


def _int32_binop(name: str, doc: str):  # type: ignore[no-untyped-def]
    @numba.extending.intrinsic
    def op(typingctx, a, b):  # type: ignore[no-untyped-def]
        if not (isinstance(a, numba.types.Integer) and isinstance(b, numba.types.Integer)):
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            i32 = context.get_value_type(numba.types.int32)

            def to_i32(value, ty):  # type: ignore[no-untyped-def]
                if ty.bitwidth > 32:
                    return builder.trunc(value, i32)
                if ty.bitwidth < 32:
                    return builder.sext(value, i32) if ty.signed else builder.zext(value, i32)
                return value

            x = to_i32(args[0], signature.args[0])
            y = to_i32(args[1], signature.args[1])
            return getattr(builder, name)(x, y)

        return numba.types.int32(a, b), codegen

    op.__doc__ = doc
    return op


# Numba widens every integer expression to int64, and LLVM then vectorises the dot products with
# 64-bit lanes. These do the operation in 32 bits (operands extended or truncated to int32, C's
# int arithmetic), which lets LLVM use vpmaddwd / vpdpwssd on 16-bit products. The callers keep
# every value far below 2**31, so nothing wraps.
add32 = _int32_binop("add", "a + b in int32")
mul32 = _int32_binop("mul", "a * b in int32")
and32 = _int32_binop("and_", "a & b in int32")
shr32 = _int32_binop("ashr", "a >> b in int32 (arithmetic shift)")


@inline
def make_qkx2_quants(
    x: np.ndarray,
    weights: np.ndarray,
    L: np.ndarray,
    Laux: np.ndarray,
    nmax: int,
    rmin: np.float32,
    rdelta: np.float32,
    nstep: int,
    use_mad: bool,
) -> tuple[np.float32, np.float32]:
    """llama.cpp's ``make_qkx2_quants`` for one group ``x`` (float32, n): fills ``L``, returns
    ``(scale, the_min)``. Scalar C loop order, float32 throughout."""
    n = x.shape[0]
    lo = x[0]
    hi = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        if x[i] < lo:
            lo = x[i]
        if x[i] > hi:
            hi = x[i]
        w = weights[i]
        sum_w += w
        sum_x += w * x[i]
    if lo > 0:
        lo = F32(0)
    if hi == lo:
        for i in range(n):
            L[i] = 0
        return F32(0), -lo
    iscale = F32(nmax) / (hi - lo)
    scale = F32(1) / iscale
    best = F32(0)
    for i in range(n):
        q = nearest_int(iscale * (x[i] - lo))
        L[i] = max(0, min(nmax, q))
        diff = scale * F32(L[i]) + lo - x[i]
        diff = abs(diff) if use_mad else diff * diff
        best += weights[i] * diff
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * F32(step) + F32(nmax)) / (hi - lo)
        sum_l = F32(0)
        sum_l2 = F32(0)
        sum_xl = F32(0)
        # Two loops where C has one: the first vectorises; the sums stay sequential, in C's order.
        for i in range(n):
            Laux[i] = max(0, min(nmax, nearest_int(iscale * (x[i] - lo))))
        for i in range(n):
            q = F32(Laux[i])
            wl = weights[i] * q
            sum_l += wl
            sum_l2 += wl * q
            sum_xl += wl * x[i]
        det = sum_w * sum_l2 - sum_l * sum_l
        if det > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            if this_min > 0:
                this_min = F32(0)
                this_scale = sum_xl / sum_l2
            err = F32(0)
            for i in range(n):
                diff = this_scale * F32(Laux[i]) + this_min - x[i]
                diff = abs(diff) if use_mad else diff * diff
                err += weights[i] * diff
            if err < best:
                for i in range(n):
                    L[i] = Laux[i]
                best = err
                scale = this_scale
                lo = this_min
    return scale, -lo


def resolve_threads(threads: int | None, work_weights: int) -> int:
    """How many threads a kernel call uses: ``threads`` if given (capped at Numba's pool),
    else all of them when the work is at least :data:`PARALLEL_MIN_WEIGHTS` weights, else 1."""
    pool = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        return pool if work_weights >= PARALLEL_MIN_WEIGHTS else 1
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    return min(threads, pool)


def dispatch(
    serial: Callable[..., Any], parallel: Callable[..., Any], threads: int | None, work_weights: int,
    *args: Any,
) -> Any:
    """Run ``serial(*args)`` or, on more than one thread, ``parallel(*args)`` with that many."""
    n = resolve_threads(threads, work_weights)
    if n == 1:
        return serial(*args)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        return parallel(*args)
    finally:
        numba.set_num_threads(previous)
