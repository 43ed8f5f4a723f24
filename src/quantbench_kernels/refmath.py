"""NumPy building blocks of the reference implementations.

They copy llama.cpp's scalar C in float32, operation for operation, so that the reference can be
bit-exact: sums are sequential (a Python loop over the element axis, vectorised across groups),
never ``np.sum`` (pairwise), and every constant is a ``np.float32`` so nothing promotes to float64.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32

# Adding 1.5 * 2**23 to a float32 of magnitude below 2**22 leaves its rounded integer value, rounded
# half to even, in the low 23 mantissa bits (offset by 2**22).
_MAGIC = F32(12582912.0)


def nearest_int(f: np.ndarray) -> np.ndarray:
    """llama.cpp's ``nearest_int``: round float32 to int32, half to even, via the 1.5*2^23 trick.

    Reproduced bit for bit, including what it gives outside |f| <= 4194303 (inf, NaN), where
    llama.cpp only asserts in debug builds.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        v = (np.asarray(f, dtype=np.float32) + _MAGIC).astype(np.float32)
    return (v.view(np.int32) & np.int32(0x007FFFFF)) - np.int32(0x00400000)


def roundf(v: np.ndarray) -> np.ndarray:
    """C's ``roundf`` of float32 ``v``: the nearest integer, halfway cases away from zero (float64;
    exact, since |v| + 0.5 is exact in float64 for any float32 below 2**29)."""
    v64 = np.asarray(v, dtype=np.float64)
    return np.copysign(np.floor(np.abs(v64) + 0.5), v64)


def c_int8(v: np.ndarray) -> np.ndarray:
    """C's ``(int8_t)`` of float32 ``v`` as gcc compiles it on x86: truncated toward zero to int32
    (``cvttss2si``: INT_MIN where out of range or NaN), of which the low byte is kept. int32."""
    v64 = np.asarray(v, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        as_int = np.where(np.abs(v64) < 2.0**31, np.trunc(v64), -(2.0**31)).astype(np.int64)
    return ((as_int & 0xFF) ^ 0x80).astype(np.int32) - 0x80


def nibbles_ref(qs: np.ndarray) -> np.ndarray:
    """The 4-bit quants of the 32-weight formats: byte j of uint8 (..., 16) holds weight j in its
    low nibble and weight j + 16 in its high nibble. Returns uint8 (..., 32) in weight order."""
    return np.concatenate([qs & 0xF, qs >> 4], axis=-1)


def pack_nibbles_ref(q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`nibbles_ref` for values 0..15: (..., 32) -> uint8 (..., 16)."""
    q = q.astype(np.uint8)
    return (q[..., :16] & 0xF) | ((q[..., 16:] & 0xF) << 4)


def f16_ref(v: np.ndarray) -> np.ndarray:
    """float32 ``v`` rounded to float16 as C's ``GGML_FP32_TO_FP16`` does (:func:`f32_to_f16_bits`)."""
    return f32_to_f16_bits(v).view(np.float16)


def high_bits_ref(q: np.ndarray) -> np.ndarray:
    """Bit 4 of each of 32 quants (int (n, 32)), packed into uint32 (n,): weight j's at bit j."""
    return (((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)


def blocks_ref(block_dtype: np.dtype, **fields: np.ndarray) -> np.ndarray:
    """uint8 (n_blocks, ``block_dtype.itemsize``): blocks of the structured ``block_dtype``, each
    field from ``fields`` (arrays of n_blocks rows); every field must be given."""
    if set(fields) != set(block_dtype.names):
        raise ValueError(f"blocks_ref: fields {sorted(fields)} are not the block's {sorted(block_dtype.names)}")
    n = len(next(iter(fields.values())))
    out = np.empty(n, dtype=block_dtype)
    for name, values in fields.items():
        out[name] = values
    return out.view(np.uint8).reshape(n, block_dtype.itemsize)


def f16_to_f32(h: np.ndarray) -> np.ndarray:
    """Decode little-endian f16 bit patterns (uint16) to float32."""
    return np.asarray(h, dtype=np.uint16).view(np.float16).astype(np.float32)


def f32_to_f16_bits(v: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest f16 (ties to even, overflow to inf) and return its bits."""
    with np.errstate(over="ignore"):
        return np.asarray(v, dtype=np.float32).astype(np.float16).view(np.uint16)


def running_max(values: np.ndarray, start: float = 0.0) -> np.ndarray:
    """``m = start; for v in values[..., j]: if v > m: m = v`` along the last axis (NaN never wins)."""
    m = np.full(values.shape[:-1], start, dtype=np.float32)
    for j in range(values.shape[-1]):
        m = np.where(values[..., j] > m, values[..., j], m)
    return m


def make_qkx2_quants(
    x: np.ndarray,
    weights: np.ndarray,
    nmax: int,
    rmin: float,
    rdelta: float,
    nstep: int,
    use_mad: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """llama.cpp's ``make_qkx2_quants`` for every group (row) of ``x`` at once.

    ``x`` and ``weights`` are float32 (groups, n). Fits ``x ~ scale * L - the_min`` with integer
    ``L`` in [0, nmax], starting from the min/max fit and then trying ``nstep + 1`` rescalings and a
    weighted least-squares fit of scale and min, keeping whichever has the least weighted error
    (absolute error if ``use_mad``, else squared).

    Returns ``(scale, the_min, L)``: float32 (groups,), float32 (groups,), uint8 (groups, n).
    """
    groups, n = x.shape
    with np.errstate(all="ignore"):
        lo = x[:, 0].copy()
        hi = x[:, 0].copy()
        sum_w = weights[:, 0].copy()
        sum_x = sum_w * x[:, 0]
        for i in range(1, n):
            lo = np.where(x[:, i] < lo, x[:, i], lo)
            hi = np.where(x[:, i] > hi, x[:, i], hi)
            sum_w = sum_w + weights[:, i]
            sum_x = sum_x + weights[:, i] * x[:, i]
        lo = np.where(lo > 0, F32(0), lo)
        flat = hi == lo

        def error(scale: np.ndarray, minimum: np.ndarray, levels: np.ndarray) -> np.ndarray:
            total = np.zeros(groups, dtype=np.float32)
            for i in range(n):
                diff = scale * levels[:, i].astype(np.float32) + minimum - x[:, i]
                diff = np.abs(diff) if use_mad else diff * diff
                total = total + weights[:, i] * diff
            return total

        def levels_for(iscale: np.ndarray, minimum: np.ndarray) -> np.ndarray:
            q = nearest_int(iscale[:, None] * (x - minimum[:, None]))
            return np.clip(q, 0, nmax).astype(np.uint8)

        # As in C, once a least-squares fit wins, its min replaces the data min in the next
        # rescaling's iscale and levels.
        minimum = lo
        iscale = F32(nmax) / (hi - minimum)
        scale = F32(1) / iscale
        levels = levels_for(iscale, minimum)
        best = error(scale, minimum, levels)
        for step in range(nstep + 1):
            iscale = (F32(rmin) + F32(rdelta) * F32(step) + F32(nmax)) / (hi - minimum)
            cand = levels_for(iscale, minimum)
            sum_l = np.zeros(groups, dtype=np.float32)
            sum_l2 = np.zeros(groups, dtype=np.float32)
            sum_xl = np.zeros(groups, dtype=np.float32)
            for i in range(n):
                wl = weights[:, i] * cand[:, i].astype(np.float32)
                sum_l = sum_l + wl
                sum_l2 = sum_l2 + wl * cand[:, i].astype(np.float32)
                sum_xl = sum_xl + wl * x[:, i]
            det = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            clamp = this_min > 0
            this_min = np.where(clamp, F32(0), this_min)
            this_scale = np.where(clamp, sum_xl / sum_l2, this_scale)
            err = error(this_scale, this_min, cand)
            take = (det > 0) & (err < best)
            levels = np.where(take[:, None], cand, levels)
            best = np.where(take, err, best)
            scale = np.where(take, this_scale, scale)
            minimum = np.where(take, this_min, minimum)

    scale = np.where(flat, F32(0), scale).astype(np.float32)
    levels = np.where(flat[:, None], np.uint8(0), levels).astype(np.uint8)
    minimum = np.where(flat, lo, minimum)
    return scale, (-minimum).astype(np.float32), levels


def qkx2_blocks_ref(x: np.ndarray, weights: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int,
                    use_mad: bool) -> tuple[np.ndarray, ...]:
    """:func:`make_qkx2_quants` over each group of weights of k-quant blocks: ``x`` and ``weights``
    float32 (n_blocks, groups, group). Returns (scales, mins: float32 (n_blocks, groups), levels:
    uint8 (n_blocks, groups, group), each block's largest scale and largest min: float32
    (n_blocks,), as C's running max from 0 finds them)."""
    n, groups, group = x.shape
    scales, mins, levels = make_qkx2_quants(x.reshape(-1, group), weights.reshape(-1, group), nmax, rmin, rdelta,
                                            nstep, use_mad=use_mad)
    scales, mins = scales.reshape(n, groups), mins.reshape(n, groups)
    return scales, mins, levels.reshape(n, groups, group), running_max(scales), running_max(mins)


def running_min(values: np.ndarray, start: float = np.inf) -> np.ndarray:
    """``m = start; for v in values[..., j]: if v < m: m = v`` along the last axis (of 0 and -0,
    the first seen wins, as in C)."""
    m = np.full(values.shape[:-1], start, dtype=np.float32)
    for j in range(values.shape[-1]):
        m = np.where(values[..., j] < m, values[..., j], m)
    return m


# llama.cpp's GROUP_MAX_EPS: a group whose largest magnitude is below it counts as all zero.
GROUP_MAX_EPS = F32(1e-15)


def first_largest(x: np.ndarray) -> np.ndarray:
    """Per row of ``x`` (float32 (groups, n)): the value of the first element of largest magnitude,
    as C's ``if (ax > amax) { amax = ax; max = x[i]; }`` picks it: ties keep the earlier one, NaN
    never wins, and a row of zeros (or NaN) gives 0."""
    amax = np.zeros(x.shape[0], dtype=np.float32)
    vmax = np.zeros(x.shape[0], dtype=np.float32)
    for i in range(x.shape[1]):
        ax = np.abs(x[:, i])
        take = ax > amax
        amax = np.where(take, ax, amax)
        vmax = np.where(take, x[:, i], vmax)
    return vmax


def offset_quants_ref(x: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """The levels of llama.cpp's ``quantize_row_q4_0_ref`` (``offset`` 8) and ``_q5_0_ref`` (16) for
    float32 (n_blocks, 32): ``d = max / -offset`` (max the first value of largest magnitude), ``q =
    min(2 offset - 1, (int8_t)(x / d + offset + 0.5))``. Returns (d float32 (n_blocks,), q)."""
    d = first_largest(x) / F32(-offset)
    inv = np.where(d != 0, F32(1) / d, F32(0)).astype(np.float32)
    return d, np.minimum(2 * offset - 1, c_int8(x * inv[:, None] + F32(offset + 0.5)))


def _weighted_fit_sums(x: np.ndarray, w: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """C's ``sumlx += w * x * l`` and ``suml2 += w * l * l`` over each group's elements in order
    (float32 (groups, n) ``x`` and weights ``w``, integer ``levels``): (sumlx, suml2), float32 (groups,)."""
    sumlx = np.zeros(x.shape[0], dtype=np.float32)
    suml2 = np.zeros(x.shape[0], dtype=np.float32)
    for i in range(x.shape[1]):
        lf = levels[:, i].astype(np.float32)
        sumlx = sumlx + w[:, i] * x[:, i] * lf
        suml2 = suml2 + w[:, i] * lf * lf
    return sumlx, suml2


def sum_squares_ref(x: np.ndarray) -> np.ndarray:
    """C's ``sum_x2 += x[j]*x[j]`` over each row of float32 (rows, n), in order: float32 (rows,)."""
    total = np.zeros(x.shape[0], dtype=np.float32)
    with np.errstate(all="ignore"):
        for j in range(x.shape[1]):
            total = total + x[:, j] * x[:, j]
    return total


def importance_ref(x: np.ndarray, imatrix: np.ndarray, sigma2: np.ndarray | None = None) -> np.ndarray:
    """The weights llama.cpp's quantizers give each value when given an importance matrix
    (``quantize_row_*_impl``): ``imatrix[j] * sqrtf(sigma2 + x[j]^2)``. ``x`` float32 (rows, n),
    ``imatrix`` float32 (n,) or (rows, n); ``sigma2`` (rows,) defaults to the 32-weight formats'
    choice, the row's mean square (:func:`sum_squares_ref` over ``n``)."""
    with np.errstate(all="ignore"):
        if sigma2 is None:
            sigma2 = sum_squares_ref(x) / F32(x.shape[1])
        return (imatrix * np.sqrt(sigma2[:, None] + x * x)).astype(np.float32)


def block_importance_ref(x: np.ndarray, imatrix: np.ndarray, block: int, sigma2) -> np.ndarray:  # type: ignore[no-untyped-def]
    """:func:`importance_ref` per block of ``block`` values, as the 256-weight formats' ``_impl``
    weight them: ``sigma2(sum of squares)`` of each block (its own expression in each format, e.g.
    ``2*sum_x2/QK_K``). ``x`` float32 (rows, n_per_row), ``imatrix`` (n_per_row,): the block's
    slice of it. float32 (rows * n_per_row / block, block)."""
    rows = x.shape[0]
    xb = x.reshape(-1, block)
    with np.errstate(all="ignore"):
        return importance_ref(xb, np.tile(imatrix.reshape(-1, block), (rows, 1)), sigma2(sum_squares_ref(xb)))


def group_sums_ref(weights: np.ndarray, group: int) -> np.ndarray:
    """C's ``sumw += weight[l]`` over each group of ``group`` values, in order: float32 (..., n) ->
    (..., n / group)."""
    w = weights.reshape(weights.shape[:-1] + (-1, group))
    total = np.zeros(w.shape[:-1], dtype=np.float32)
    for k in range(group):
        total = total + w[..., k]
    return total


def make_qx_quants(x: np.ndarray, nmax: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's ``make_qx_quants(n, nmax, x, L, rmse_type=1, qw)`` for every group (row) of ``x``
    (float32 (groups, n)): symmetric levels ``L - nmax`` in [-nmax, nmax - 1] and the scale that
    fits them, weighting each value by ``weights`` (float32 (groups, n), C's ``qw``) or, without,
    by its square; tries 18 rescalings of the first fit.

    Returns ``(scale float32 (groups,), L uint8 (groups, n))`` with ``L`` in [0, 2 nmax - 1].
    """
    groups, n = x.shape
    with np.errstate(all="ignore"):
        vmax = first_largest(x)
        zero = np.abs(vmax) < GROUP_MAX_EPS
        w = x * x if weights is None else weights

        def fit(iscale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            levels = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
            return (levels, *_weighted_fit_sums(x, w, levels))

        levels, sumlx, suml2 = fit(F32(-nmax) / vmax)
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0)).astype(np.float32)
        best = scale * sumlx
        for step in [s for s in range(-9, 10) if s != 0]:
            cand, sumlx, suml2 = fit(-(F32(nmax) + F32(0.1) * F32(step)) / vmax)
            take = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            levels = np.where(take[:, None], cand, levels)
            scale = np.where(take, sumlx / suml2, scale)
            best = np.where(take, scale * sumlx, best)
    levels = np.where(zero[:, None], 0, levels + nmax).astype(np.uint8)
    return np.where(zero, F32(0), scale).astype(np.float32), levels


def make_qp_quants(x: np.ndarray, nmax: int, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's ``make_qp_quants(n, nmax, x, L, quant_weights)`` for every group (row) of ``x``
    (float32 (groups, n), non-negative: a block's sub-block scales or mins): levels in [0, nmax] of
    one positive scale, the best of 9 scales by weighted squared error, then up to 5 passes that move
    one level at a time while the weighted fit improves, in C's element order. C keeps the levels
    in a ``uint8_t``: a negative level is stored mod 256, as here.

    Returns ``(scale float32 (groups,), L uint8 (groups, n))``; a group whose largest value is below
    ``GROUP_MAX_EPS``, or whose weights are all 0, gets scale 0 (as llama.cpp since its version of
    2025: the one libgguf builds)."""
    groups, n = x.shape
    w = weights
    with np.errstate(all="ignore"):
        vmax = np.zeros(groups, dtype=np.float32)
        for i in range(n):
            vmax = np.where(vmax > x[:, i], vmax, x[:, i])
        zero = vmax < GROUP_MAX_EPS
        iscale = F32(nmax) / vmax
        first = (nearest_int(iscale[:, None] * x) & 0xFF).astype(np.float32)
        scale = F32(1) / iscale
        best = np.zeros(groups, dtype=np.float32)
        for i in range(n):
            diff = x[:, i] - scale * first[:, i]
            best = best + w[:, i] * diff * diff
        for step in (-4, -3, -2, -1, 1, 2, 3, 4):
            iscale_is = (F32(0.1) * F32(step) + F32(nmax)) / vmax
            scale_is = F32(1) / iscale_is
            mse = np.zeros(groups, dtype=np.float32)
            for i in range(n):
                diff = x[:, i] - scale_is * np.minimum(nmax, nearest_int(iscale_is * x[:, i])).astype(np.float32)
                mse = mse + w[:, i] * diff * diff
            better = mse < best
            best = np.where(better, mse, best)
            iscale = np.where(better, iscale_is, iscale)
        levels = np.minimum(nmax, nearest_int(iscale[:, None] * x))
        sumlx, suml2 = _weighted_fit_sums(x, w, levels)
        stored = levels & 0xFF
        for _ in range(5):
            for i in range(n):
                li = stored[:, i].astype(np.float32)
                slx = sumlx - w[:, i] * x[:, i] * li
                sl2 = suml2 - w[:, i] * li * li
                new_l = np.minimum(nmax, nearest_int(x[:, i] * sl2 / slx))
                nf = new_l.astype(np.float32)
                slx2 = slx + w[:, i] * x[:, i] * nf
                sl22 = sl2 + w[:, i] * nf * nf
                take = ((slx > 0) & (sl2 > 0) & (new_l != stored[:, i])
                        & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22))
                stored[:, i] = np.where(take, new_l & 0xFF, stored[:, i])
                sumlx = np.where(take, slx2, sumlx)
                suml2 = np.where(take, sl22, suml2)
        scale = np.where(suml2 > 0, sumlx / suml2, F32(0))
    return np.where(zero, F32(0), scale).astype(np.float32), np.where(zero[:, None], 0, stored).astype(np.uint8)


def make_q3_quants(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's ``make_q3_quants(n, nmax, x, L, do_rmse=true)`` for every group (row) of ``x``
    (float32 (groups, n)): the first symmetric fit, then up to 5 passes that move one level at a
    time while the weighted fit improves (weights x^2), in C's element order.

    Returns ``(scale float32 (groups,), L uint8 (groups, n))`` with ``L`` in [0, 2 nmax - 1]. A pass
    that changes nothing leaves the state as it was, so running all 5 equals C's early ``break``.
    """
    groups, n = x.shape
    with np.errstate(all="ignore"):
        vmax = first_largest(x)
        zero = np.abs(vmax) < GROUP_MAX_EPS
        iscale = F32(-nmax) / vmax
        levels = np.clip(nearest_int(iscale[:, None] * x), -nmax, nmax - 1)
        w = x * x
        sumlx, suml2 = _weighted_fit_sums(x, w, levels)
        for _ in range(5):
            for i in range(n):
                li = levels[:, i].astype(np.float32)
                wx = w[:, i] * x[:, i]
                slx = sumlx - wx * li
                sl2 = suml2 - w[:, i] * li * li
                new_l = np.clip(nearest_int(x[:, i] * sl2 / slx), -nmax, nmax - 1)
                nf = new_l.astype(np.float32)
                slx2 = slx + wx * nf
                sl22 = sl2 + w[:, i] * nf * nf
                take = (slx > 0) & (new_l != levels[:, i]) & (sl22 > 0) & (slx2 * slx2 * suml2 > sumlx * sumlx * sl22)
                levels[:, i] = np.where(take, new_l, levels[:, i])
                sumlx = np.where(take, slx2, sumlx)
                suml2 = np.where(take, sl22, suml2)
        scale = sumlx / suml2
    levels = np.where(zero[:, None], 0, levels + nmax).astype(np.uint8)
    return np.where(zero, F32(0), scale).astype(np.float32), levels



def groups_ref(fit, xs: np.ndarray, *args: int, weights: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    """``fit`` (:func:`make_q3_quants` or :func:`make_qx_quants`, with ``args`` and, if given,
    ``weights`` shaped as ``xs``) over each group of the blocks ``xs`` (float32 (n_blocks, groups,
    group)): (scales float32 (n_blocks, groups), levels uint8 (n_blocks, groups, group))."""
    n, groups, group = xs.shape
    extra = () if weights is None else (weights.reshape(-1, group),)
    scales, levels = fit(xs.reshape(-1, group), *args, *extra)
    return scales.reshape(n, groups), levels.reshape(n, groups, group)
