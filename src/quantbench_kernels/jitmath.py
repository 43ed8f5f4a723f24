"""The math the format kernels share, compiled with :mod:`quantbench_kernels.compilation`'s settings.

float32 constants throughout, so that the kernels round exactly as the NumPy reference does.
Numba has no float16 on the CPU: f16 values are decoded and encoded by hand.
"""

from __future__ import annotations

import numba
import numpy as np

from . import simd
from .compilation import helper, inline

F32 = np.float32


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

    Matches NumPy's ``astype(np.float16)`` and llama.cpp's ``GGML_FP32_TO_FP16``, except that a
    NaN encodes as the quiet NaN 0x7E00 of its sign (its payload is dropped). Integer steps on
    the float's bits: the exponent rebiased from 127 to 15, the 23-bit mantissa rounded to 10
    (a carry moves into the exponent, as it should).
    """
    if simd.F16C:
        return simd.f16c_bits(v)
    bits = np.int64(float_bits(v)) & 0xFFFFFFFF
    sign = np.int64((bits >> 16) & 0x8000)
    a = bits & 0x7FFFFFFF
    if a > 0x7F800000:  # NaN
        return sign | 0x7E00
    if a >= 0x477FF000:  # 65520 and up (ties of 65504 and 65536 go to inf), inf
        return sign | 0x7C00
    if a < 0x38800000:  # below 2**-14: subnormal, in steps of 2**-24, exact in float32, ties to even
        return sign | np.int64(nearest_int(abs(v) * F32(16777216.0)))
    rebiased = a - 0x38000000
    return sign | ((rebiased + 0xFFF + ((rebiased >> 13) & 1)) >> 13)


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


@inline
def roundf(v: np.float32) -> np.float32:
    """C's ``roundf``: the nearest integer, halfway cases away from zero (computed in float64,
    where |v| + 0.5 is exact; inf and NaN pass through)."""
    v64 = np.float64(v)
    return F32(np.copysign(np.floor(abs(v64) + 0.5), v64))


@inline
def c_int8(v: np.float32) -> np.int32:
    """C's ``(int8_t)`` of a float32 as gcc compiles it on x86 (see :func:`quantbench_kernels.refmath.c_int8`):
    out of range or NaN, ``cvttss2si`` gives INT_MIN, whose low byte is 0. A select, not a branch,
    so that the quantizers' loops stay vectorisable."""
    inside = abs(v) < F32(2147483648.0)
    return np.int32(np.int8(np.int32(v if inside else F32(0)) & np.int32(0xFF)))


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
and32 = _int32_binop("and_", "a & b in int32")
shr32 = _int32_binop("ashr", "a >> b in int32 (arithmetic shift)")


def qkx2_scratch(group: int, groups: int, imatrix: bool = False) -> tuple[tuple[str, str, int | tuple[int, int]], ...]:
    """The scratch arrays (``compilation.Loops.scratch``) of a k-quant quantizer that fits ``groups``
    groups of ``group`` weights with :func:`make_qkx2_quants` (Q2_K, Q4_K, Q5_K): the block's levels
    ``L``, the fit's ``lanes``, one group's ``weights``, and the groups' ``scales`` and ``mins``; given
    importance (``imatrix``), lanes for 37 steps and the groups' summed weights ``sw`` and the
    levels ``Ls``, ``Lm`` of their scales and mins."""
    common = (("weights", "float32", group), ("scales", "float32", groups), ("mins", "float32", groups))
    if not imatrix:
        return (("L", "uint8", group * groups), ("lanes", "float32", (8, 32)), *common)
    return (("L", "uint8", group * groups), ("lanes", "float32", (8, 40)), *common, ("sw", "float32", groups),
            ("Ls", "uint8", groups), ("Lm", "uint8", groups))


@helper
def make_qkx2_quants(
    x: np.ndarray,
    weights: np.ndarray,
    L: np.ndarray,
    lanes: np.ndarray,
    nmax: int,
    rmin: np.float32,
    rdelta: np.float32,
    nstep: int,
    use_mad: bool,
) -> tuple[np.float32, np.float32]:
    """llama.cpp's ``make_qkx2_quants`` for one group ``x`` (float32, n): fills ``L``, returns
    ``(scale, the_min)``, float32 steps as C's. ``lanes``: float32 scratch (8, at least nstep + 1
    rounded up to a multiple of 8; Numba checks no bounds: the callers pass (8, 32), nstep <= 20).

    C tries the steps one after another, and a step that lowers the error moves ``min``, which the
    later steps then use. Here the steps are computed side by side, one vector lane each (each
    lane's sums in C's order over the weights: the same bits), under the current ``min``; of the
    steps not yet tried, the first that lowers the error is taken, as C takes it, and the steps
    after it are computed again under its ``min``. A group takes a few such passes, not one per step."""
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
    iscales, sum_l, sum_l2, sum_xl = lanes[0], lanes[1], lanes[2], lanes[3]
    scales, mins, errs, dets = lanes[4], lanes[5], lanes[6], lanes[7]
    steps = nstep + 1
    width = (steps + 7) // 8 * 8  # lanes computed: whole vectors (the lanes past nstep for nothing)
    top = np.int32(nmax)
    zero = np.int32(0)
    first = 0
    while first < steps:
        # Every lane from 0, not from ``first``: loops from 0 are what LLVM vectorises (the lanes
        # before ``first`` are computed for nothing, and never taken).
        for s in range(width):
            iscales[s] = (rmin + rdelta * F32(s) + F32(nmax)) / (hi - lo)
            sum_l[s] = F32(0)
            sum_l2[s] = F32(0)
            sum_xl[s] = F32(0)
            errs[s] = F32(0)
        for i in range(n):
            xi = x[i]
            wi = weights[i]
            d = xi - lo
            for s in range(width):  # across the steps: vectorised
                q = F32(max(zero, min(top, nearest_int(iscales[s] * d))))
                wl = wi * q
                sum_l[s] += wl
                sum_l2[s] += wl * q
                sum_xl[s] += wl * xi
        for s in range(width):
            dets[s] = sum_w * sum_l2[s] - sum_l[s] * sum_l[s]
            this_scale = (sum_w * sum_xl[s] - sum_x * sum_l[s]) / dets[s]
            this_min = (sum_l2[s] * sum_x - sum_l[s] * sum_xl[s]) / dets[s]
            if this_min > 0:
                this_min = F32(0)
                this_scale = sum_xl[s] / sum_l2[s]
            scales[s] = this_scale
            mins[s] = this_min
        for i in range(n):
            xi = x[i]
            wi = weights[i]
            d = xi - lo
            for s in range(width):
                q = F32(max(zero, min(top, nearest_int(iscales[s] * d))))
                diff = scales[s] * q + mins[s] - xi
                diff = abs(diff) if use_mad else diff * diff
                errs[s] += wi * diff
        taken = -1
        for s in range(first, steps):  # C's order: the first step that lowers the error
            if dets[s] > 0 and errs[s] < best:
                taken = s
                break
        if taken < 0:
            break
        for i in range(n):
            L[i] = max(0, min(nmax, nearest_int(iscales[taken] * (x[i] - lo))))
        best = errs[taken]
        scale = scales[taken]
        lo = mins[taken]
        first = taken + 1
    return scale, -lo


GROUP_MAX_EPS = F32(1e-15)  # llama.cpp's: a group whose largest magnitude is below it is all zero


@inline
def pack_nibbles(L: np.ndarray, blk: np.ndarray, at: int) -> None:
    """32 levels 0..15 as the 32-weight formats' 16 bytes of nibbles at ``blk[at:]``: weight j in
    the low nibble of byte j, weight j + 16 in its high nibble."""
    for j in range(16):
        blk[at + j] = L[j] | (L[j + 16] << 4)


@inline
def mean_square(x: np.ndarray) -> np.float32:
    """C's ``sum_x2 += x[j]*x[j]`` over ``x`` in order, over its length: ``refmath.sum_squares_ref``
    of one row over n (the 32-weight formats' ``sigma2`` given importance)."""
    total = F32(0)
    for j in range(x.shape[0]):
        total += x[j] * x[j]
    return total / F32(x.shape[0])


@inline
def importance_weights(x: np.ndarray, qw: np.ndarray, sigma2: np.float32, out: np.ndarray) -> None:
    """``out[j] = qw[j] * sqrtf(sigma2 + x[j]*x[j])``: ``refmath.importance_ref`` of one block."""
    for j in range(x.shape[0]):
        out[j] = qw[j] * np.sqrt(sigma2 + x[j] * x[j])


@inline
def running_max(values: np.ndarray) -> np.float32:
    """The largest of ``values`` as C's ``if (v > max) max = v`` finds it from 0 (NaN never wins):
    ``refmath.running_max`` of one block."""
    best = F32(0)
    for k in range(values.shape[0]):
        if values[k] > best:
            best = values[k]
    return best


@inline
def first_largest(x: np.ndarray) -> np.float32:
    """The first element of largest magnitude of ``x`` (C: ``if (ax > amax) { amax = ax; max = x[i]; }``)."""
    amax = F32(0)
    vmax = F32(0)
    for i in range(x.shape[0]):
        ax = abs(x[i])
        if ax > amax:
            amax = ax
            vmax = x[i]
    return vmax


@inline
def _qx_fit(x: np.ndarray, iscale: np.float32, nmax: int, L: np.ndarray, store: bool, qw: np.ndarray,
            weighted: bool) -> tuple[np.float32, np.float32]:
    """One symmetric fit of make_qx_quants (weights ``qw`` if ``weighted``, else x^2):
    ``(sumlx, suml2)``; stores the levels plus ``nmax`` in ``L`` if ``store``."""
    sumlx = F32(0)
    suml2 = F32(0)
    for i in range(x.shape[0]):
        l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
        if store:
            L[i] = l + nmax
        w = qw[i] if weighted else x[i] * x[i]
        sumlx += w * x[i] * F32(l)
        suml2 += w * F32(l) * F32(l)
    return sumlx, suml2


@inline
def make_qx_quants(x: np.ndarray, nmax: int, L: np.ndarray) -> np.float32:
    """llama.cpp's ``make_qx_quants(n, nmax, x, L, rmse_type=1, qw=NULL)`` for one group: fills
    ``L`` with levels in [0, 2 nmax - 1], returns the scale (see :func:`refmath.make_qx_quants`)."""
    return _make_qx_quants(x, nmax, L, x, False)


@inline
def make_qx_quants_weighted(x: np.ndarray, nmax: int, L: np.ndarray, qw: np.ndarray) -> np.float32:
    """:func:`make_qx_quants` with each value weighted by ``qw`` (C's ``qw``, given importance)."""
    return _make_qx_quants(x, nmax, L, qw, True)


@inline
def _make_qx_quants(x: np.ndarray, nmax: int, L: np.ndarray, qw: np.ndarray, weighted: bool) -> np.float32:
    vmax = first_largest(x)
    if abs(vmax) < GROUP_MAX_EPS:
        for i in range(x.shape[0]):
            L[i] = 0
        return F32(0)
    sumlx, suml2 = _qx_fit(x, F32(-nmax) / vmax, nmax, L, True, qw, weighted)
    scale = sumlx / suml2 if suml2 != 0 else F32(0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(F32(nmax) + F32(0.1) * F32(step)) / vmax
        sumlx, suml2 = _qx_fit(x, iscale, nmax, L, False, qw, weighted)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            _qx_fit(x, iscale, nmax, L, True, qw, weighted)
            scale = sumlx / suml2
            best = scale * sumlx
    return scale


@helper
def make_qp_quants(x: np.ndarray, nmax: int, L: np.ndarray, w: np.ndarray) -> np.float32:
    """llama.cpp's ``make_qp_quants(n, nmax, x, L, quant_weights)`` for one group: fills ``L`` (uint8:
    a negative level is stored mod 256, as C's ``uint8_t``), returns the scale (see
    :func:`refmath.make_qp_quants`)."""
    n = x.shape[0]
    vmax = F32(0)
    for i in range(n):
        vmax = vmax if vmax > x[i] else x[i]
    if vmax < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0)
    iscale = F32(nmax) / vmax
    scale = F32(1) / iscale
    best = F32(0)
    for i in range(n):
        diff = x[i] - scale * F32(np.uint8(nearest_int(iscale * x[i]) & 0xFF))
        best += w[i] * diff * diff
    for step in range(-4, 5):
        if step == 0:
            continue
        iscale_is = (F32(0.1) * F32(step) + F32(nmax)) / vmax
        scale_is = F32(1) / iscale_is
        mse = F32(0)
        for i in range(n):
            diff = x[i] - scale_is * F32(min(nmax, nearest_int(iscale_is * x[i])))
            mse += w[i] * diff * diff
        if mse < best:
            best = mse
            iscale = iscale_is
    sumlx = F32(0)
    suml2 = F32(0)
    for i in range(n):
        l = min(nmax, nearest_int(iscale * x[i]))
        L[i] = np.uint8(l & 0xFF)
        sumlx += w[i] * x[i] * F32(l)
        suml2 += w[i] * F32(l) * F32(l)
    for _ in range(5):
        changed = 0
        for i in range(n):
            li = F32(L[i])
            slx = sumlx - w[i] * x[i] * li
            sl2 = suml2 - w[i] * li * li
            if slx > 0 and sl2 > 0:
                new_l = min(nmax, nearest_int(x[i] * sl2 / slx))
                if new_l != np.int32(L[i]):
                    slx += w[i] * x[i] * F32(new_l)
                    sl2 += w[i] * F32(new_l) * F32(new_l)
                    if slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = np.uint8(new_l & 0xFF)
                        sumlx = slx
                        suml2 = sl2
                        changed += 1
        if changed == 0:
            break
    return sumlx / suml2 if suml2 > 0 else F32(0)


@inline
def make_q3_quants(x: np.ndarray, nmax: int, L: np.ndarray) -> np.float32:
    """llama.cpp's ``make_q3_quants(n, nmax, x, L, do_rmse=true)`` for one group: fills ``L``
    with levels in [0, 2 nmax - 1], returns the scale (see :func:`refmath.make_q3_quants`)."""
    n = x.shape[0]
    vmax = first_largest(x)
    if abs(vmax) < GROUP_MAX_EPS:
        for i in range(n):
            L[i] = 0
        return F32(0)
    iscale = F32(-nmax) / vmax
    sumlx = F32(0)
    suml2 = F32(0)
    for i in range(n):
        l = max(-nmax, min(nmax - 1, nearest_int(iscale * x[i])))
        L[i] = l  # signed until the end, as in C
        w = x[i] * x[i]
        sumlx += w * x[i] * F32(l)
        suml2 += w * F32(l) * F32(l)
    for _ in range(5):
        n_changed = 0
        for i in range(n):
            w = x[i] * x[i]
            li = F32(L[i])
            slx = sumlx - w * x[i] * li
            if slx > 0:
                sl2 = suml2 - w * li * li
                new_l = max(-nmax, min(nmax - 1, nearest_int(x[i] * sl2 / slx)))
                if new_l != L[i]:
                    slx += w * x[i] * F32(new_l)
                    sl2 += w * F32(new_l) * F32(new_l)
                    if sl2 > 0 and slx * slx * suml2 > sumlx * sumlx * sl2:
                        L[i] = new_l
                        sumlx = slx
                        suml2 = sl2
                        n_changed += 1
        if n_changed == 0:
            break
    for i in range(n):
        L[i] += nmax
    return sumlx / suml2
