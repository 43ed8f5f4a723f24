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
