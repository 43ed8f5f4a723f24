"""Q4_K: 256 weights in 144 bytes (4.5 bits per weight).

One super-block of 8 sub-blocks of 32 weights; each sub-block has a 6-bit scale and a 6-bit min::

    offset  size  field
         0     2  d       f16, super-block scale of the 6-bit scales
         2     2  dmin    f16, super-block scale of the 6-bit mins
         4    12  scales  8 scales + 8 mins, 6 bits each, packed:
                          bytes 0-3:  sc[0..3]  in bits 0-5, high 2 bits of sc[4..7] in bits 6-7
                          bytes 4-7:  m[0..3]   in bits 0-5, high 2 bits of m[4..7]  in bits 6-7
                          bytes 8-11: low 4 bits of sc[4..7] in bits 0-3, of m[4..7] in bits 4-7
        16   128  qs      4-bit quants: byte 32*p + l holds weight 64*p + l in its low nibble
                          and weight 64*p + 32 + l in its high nibble (p = 0..3, l = 0..31)

    weight = d * sc[j] * q - dmin * m[j]      (j = sub-block of the weight)

Reference (``*_ref``, NumPy) and Numba kernels (same names without ``_ref``) follow llama.cpp's
``dequantize_row_q4_K``, ``quantize_row_q4_K_ref`` and ``ggml_vec_dot_q4_K_q8_K`` (generic scalar).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import Loops, helper, inline
from ..jitmath import (
    F32,
    and32,
    importance_weights,
    make_qkx2_quants,
    make_qp_quants,
    nearest_int,
    qkx2_scratch,
    read_f16,
    running_max,
    shr32,
    write_f16,
)
from ..refmath import f16_to_f32, f32_to_f16_bits
from ..registry import BlockFormat, Ops
from . import q8_k

BLOCK_DTYPE = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qs", "u1", 128)])
QK = 256


# ----------------------------------------------------------------------------------------------
# Reference (NumPy)
# ----------------------------------------------------------------------------------------------


def unpack_scales_ref(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit scales and 8 six-bit mins of each block: uint8 (n, 12) -> 2 x uint8 (n, 8)."""
    q = packed.astype(np.uint8)
    sc = np.empty(q.shape[:-1] + (8,), dtype=np.uint8)
    m = np.empty_like(sc)
    sc[..., :4] = q[..., 0:4] & 63
    m[..., :4] = q[..., 4:8] & 63
    sc[..., 4:] = (q[..., 8:12] & 0xF) | ((q[..., 0:4] >> 6) << 4)
    m[..., 4:] = (q[..., 8:12] >> 4) | ((q[..., 4:8] >> 6) << 4)
    return sc, m


def pack_scales_ref(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Inverse of :func:`unpack_scales_ref` for values in 0..63: 2 x uint8 (n, 8) -> uint8 (n, 12)."""
    packed = np.empty(sc.shape[:-1] + (12,), dtype=np.uint8)
    packed[..., 0:4] = sc[..., :4] | ((sc[..., 4:] >> 4) << 6)
    packed[..., 4:8] = m[..., :4] | ((m[..., 4:] >> 4) << 6)
    packed[..., 8:12] = (sc[..., 4:] & 0xF) | ((m[..., 4:] & 0xF) << 4)
    return packed


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 144) -> ``out``, float32 (n_blocks, 256)."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN scales decode to inf/NaN, as in C
        b = blocks.view(BLOCK_DTYPE)[:, 0]
        d = b["d"].astype(np.float32)[:, None]
        dmin = b["dmin"].astype(np.float32)[:, None]
        sc, m = unpack_scales_ref(b["scales"])
        qs = b["qs"].reshape(-1, 4, 32)
        # Sub-block 2p takes the low nibbles of qs[32p:32p+32], sub-block 2p+1 the high nibbles.
        q = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32)
        weights = (d * sc)[..., None] * q - (dmin * m)[..., None]
        out[...] = weights.reshape(-1, QK)


def fit_blocks_ref(x: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int) -> tuple[np.ndarray, ...]:
    """The quantizer of the formats with Q4_K's header (Q4_K: nmax 15, Q5_K: 31), as their
    ``quantize_row_*_ref``: ``make_qkx2_quants`` per 32-weight sub-block (weights: the sub-block's
    RMS plus |x|), the scales and mins rounded to 6 bits against the block's d and dmin, then every
    sub-block re-quantized against its rounded scale and min.

    ``x``: float32 (n_blocks, 256). Returns (d bits, dmin bits, uint8 (n, 12) packed scales and
    mins, uint8 (n, 256) levels in [0, nmax])."""
    n = x.shape[0]
    xs = x.reshape(n, 8, 32)
    with np.errstate(all="ignore"):
        sum_x2 = np.zeros((n, 8), dtype=np.float32)
        for i in range(32):
            sum_x2 = sum_x2 + xs[..., i] * xs[..., i]
        av_x = np.sqrt(sum_x2 / F32(32))
        weights = av_x[..., None] + np.abs(xs)
    scales, mins, levels, max_scale, max_min = refmath.qkx2_blocks_ref(xs, weights, nmax, rmin, rdelta, nstep,
                                                                       use_mad=False)
    with np.errstate(all="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63) / max_scale, F32(0))
        inv_min = np.where(max_min > 0, F32(63) / max_min, F32(0))
        # C stores nearest_int() in a uint8_t, then clamps to 63.
        ls = np.minimum(refmath.nearest_int(inv_scale[:, None] * scales) & 0xFF, 63).astype(np.uint8)
        lm = np.minimum(refmath.nearest_int(inv_min[:, None] * mins) & 0xFF, 63).astype(np.uint8)
    return _requantize_ref(xs, levels, ls, lm, max_scale / F32(63), max_min / F32(63), nmax)


def _requantize_ref(xs: np.ndarray, levels: np.ndarray, ls: np.ndarray, lm: np.ndarray, d: np.ndarray,
                    dmin: np.ndarray, nmax: int) -> tuple[np.ndarray, ...]:
    """The end of both quantizers: the scales and mins ``ls``, ``lm`` (uint8 (n, 8)) packed, ``d``
    and ``dmin`` rounded to f16, then every sub-block of ``xs`` (float32 (n, 8, 32)) re-quantized
    against its rounded scale and min; a sub-block whose scale rounds to zero keeps its ``levels``."""
    n = xs.shape[0]
    packed = pack_scales_ref(ls, lm)
    sc, m = unpack_scales_ref(packed)
    with np.errstate(all="ignore"):
        d_bits, dmin_bits = f32_to_f16_bits(d), f32_to_f16_bits(dmin)
        d_sub = f16_to_f32(d_bits)[:, None] * sc
        dm_sub = f16_to_f32(dmin_bits)[:, None] * m
        q = np.clip(refmath.nearest_int((xs + dm_sub[..., None]) / d_sub[..., None]), 0, nmax)
        levels = np.where((d_sub != 0)[..., None], q, levels).astype(np.uint8)
    return d_bits, dmin_bits, packed, levels.reshape(n, QK)


def fit_blocks_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, nmax: int, clamp: bool) -> tuple[np.ndarray, ...]:
    """:func:`fit_blocks_ref` given importance, as ``quantize_row_q4_K_impl`` (nmax 15) and
    ``quantize_row_q5_K_impl`` (31, ``clamp``: its scales and mins kept to 63): each sub-block fitted
    by ``make_qkx3_quants(32, nmax, ..., -0.9f, 0.05f, 36, false)`` (:func:`refmath.make_qkx2_quants`,
    the same for finite values) weighted by :func:`refmath.block_importance_ref` (``sigma2`` twice the
    block's mean square), the scales and mins by ``make_qp_quants(8, 63, ...)`` weighted by each
    sub-block's summed weights. ``x``: float32 (rows, n_per_row)."""
    weights = refmath.block_importance_ref(x, imatrix, QK, lambda sum_x2: F32(2) * sum_x2 / F32(QK))
    n = weights.shape[0]
    xs = x.reshape(n, 8, 32)
    scales, mins, levels = refmath.make_qkx2_quants(xs.reshape(-1, 32), weights.reshape(-1, 32), nmax, -0.9, 0.05,
                                                    36, use_mad=False)
    sw = refmath.group_sums_ref(weights, 32)
    d, ls = refmath.make_qp_quants(scales.reshape(n, 8), 63, sw)
    dmin, lm = refmath.make_qp_quants(mins.reshape(n, 8), 63, sw)
    if clamp:
        ls, lm = np.minimum(ls, 63), np.minimum(lm, 63)
    return _requantize_ref(xs, levels.reshape(n, 8, 32), ls, lm, d, dmin, nmax)


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 256) -> uint8 (n_blocks, 144), as ``quantize_row_q4_K_ref``."""
    return _blocks_ref(*fit_blocks_ref(x, 15, -1.0, 0.1, 20))


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (rows, n_per_row) with importance float32 (n_per_row,) -> uint8 (n_blocks, 144), as
    ``quantize_row_q4_K_impl`` (:func:`fit_blocks_imatrix_ref`)."""
    return _blocks_ref(*fit_blocks_imatrix_ref(x, imatrix, 15, clamp=False))


def _blocks_ref(d_bits: np.ndarray, dmin_bits: np.ndarray, packed: np.ndarray, levels: np.ndarray) -> np.ndarray:
    n = levels.shape[0]
    out = np.empty(n, dtype=BLOCK_DTYPE)
    out["d"] = d_bits.view(np.float16)
    out["dmin"] = dmin_bits.view(np.float16)
    out["scales"] = packed
    pairs = levels.reshape(n, 4, 2, 32)
    out["qs"] = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(n, 128)
    return out.view(np.uint8).reshape(n, BLOCK_DTYPE.itemsize)


def dot_parts_ref(w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each weight's quant, scale and min, and each block's d and dmin, of uint8 (rows, nb, 144)
    Q4_K blocks: int32 (rows, nb, 256) q, sc, m and float32 (rows, nb) d, dmin, in the order
    ``q8_k.dot_terms_ref`` takes them (q, sc, d, m, dmin). Q5_K shares the scales and mins."""
    rows, nb, _ = w.shape
    b = w.view(BLOCK_DTYPE)[..., 0]  # (rows, nb)
    sc, m = unpack_scales_ref(b["scales"])  # (rows, nb, 8)
    qs = b["qs"].reshape(rows, nb, 4, 32)
    q4 = np.stack([qs & 0xF, qs >> 4], axis=3).reshape(rows, nb, QK)
    return (q4.astype(np.int32), np.repeat(sc.astype(np.int32), 32, axis=-1), b["d"].astype(np.float32),
            np.repeat(m.astype(np.int32), 32, axis=-1), b["dmin"].astype(np.float32))


# Dot products on Q8_K activations, as the generic ``ggml_vec_dot_q4_K_q8_K``.
gemv_ref, dot_terms_ref = q8_k.lanes_dots_ref(dot_parts_ref)


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


@inline
def scale_min(blk: np.ndarray, j: int) -> tuple[np.int32, np.int32]:
    """6-bit scale and min of sub-block ``j`` of one block (uint8[144]); see the layout above."""
    if j < 4:
        sc = and32(blk[4 + j], 63)
        m = and32(blk[8 + j], 63)
    else:
        sc = and32(blk[8 + j], 0xF) | (shr32(blk[j], 6) << 4)
        m = shr32(blk[8 + j], 4) | (shr32(blk[4 + j], 6) << 4)
    return np.int32(sc), np.int32(m)


@helper
def fit_block(x: np.ndarray, blk: np.ndarray, L: np.ndarray, lanes: np.ndarray, weights: np.ndarray,
              scales: np.ndarray, mins: np.ndarray, nmax: int, rmin: np.float32, rdelta: np.float32,
              nstep: int) -> None:
    """:func:`fit_blocks_ref` for one block (float32 x[256]): writes d, dmin and the packed scales
    and mins into the block's header, and the levels (0..nmax) into ``L``."""
    for j in range(8):
        xj = x[32 * j:32 * j + 32]
        sum_x2 = F32(0)
        for i in range(32):
            sum_x2 += xj[i] * xj[i]
        av_x = np.sqrt(sum_x2 / F32(32))
        for i in range(32):
            weights[i] = av_x + abs(xj[i])
        scales[j], mins[j] = make_qkx2_quants(xj, weights, L[32 * j:32 * j + 32], lanes, nmax, rmin, rdelta, nstep,
                                              False)
    max_scale = running_max(scales)
    max_min = running_max(mins)
    inv_scale = F32(63) / max_scale if max_scale > 0 else F32(0)
    inv_min = F32(63) / max_min if max_min > 0 else F32(0)
    for k in range(12):
        blk[4 + k] = 0
    for j in range(8):
        _pack_scale_min(blk, j, min(63, nearest_int(inv_scale * scales[j]) & 0xFF),
                        min(63, nearest_int(inv_min * mins[j]) & 0xFF))
    write_f16(blk, 0, max_scale / F32(63))
    write_f16(blk, 2, max_min / F32(63))
    _requantize(x, blk, L, nmax)


@helper
def fit_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, L: np.ndarray, lanes: np.ndarray,
                      weights: np.ndarray, scales: np.ndarray, mins: np.ndarray, sw: np.ndarray, Ls: np.ndarray,
                      Lm: np.ndarray, nmax: int, clamp: bool) -> None:
    """:func:`fit_blocks_imatrix_ref` for one block (float32 x[256], its importance ``qw``): the
    header and the levels, as :func:`fit_block` writes them."""
    sum_x2 = F32(0)
    for i in range(QK):
        sum_x2 += x[i] * x[i]
    sigma2 = F32(2) * sum_x2 / F32(QK)
    for j in range(8):
        xj = x[32 * j:32 * j + 32]
        importance_weights(xj, qw[32 * j:32 * j + 32], sigma2, weights)
        total = F32(0)
        for i in range(32):
            total += weights[i]
        sw[j] = total
        scales[j], mins[j] = make_qkx2_quants(xj, weights, L[32 * j:32 * j + 32], lanes, nmax, F32(-0.9), F32(0.05),
                                              36, False)
    d = make_qp_quants(scales, 63, Ls, sw)
    dmin = make_qp_quants(mins, 63, Lm, sw)
    for k in range(12):
        blk[4 + k] = 0
    for j in range(8):
        _pack_scale_min(blk, j, min(63, Ls[j]) if clamp else Ls[j], min(63, Lm[j]) if clamp else Lm[j])
    write_f16(blk, 0, d)
    write_f16(blk, 2, dmin)
    _requantize(x, blk, L, nmax)


@inline
def _pack_scale_min(blk: np.ndarray, j: int, ls: int, lm: int) -> None:
    """Sub-block ``j``'s 6-bit scale and min into the zeroed header bytes 4..15."""
    if j < 4:
        blk[4 + j] |= ls
        blk[8 + j] |= lm
    else:
        blk[8 + j] = (ls & 0xF) | ((lm & 0xF) << 4)
        blk[j] |= (ls >> 4) << 6
        blk[4 + j] |= (lm >> 4) << 6


@inline
def _requantize(x: np.ndarray, blk: np.ndarray, L: np.ndarray, nmax: int) -> None:
    """Every sub-block's levels against its rounded scale and min (kept where the scale is 0)."""
    d_all = read_f16(blk, 0)
    dmin_all = read_f16(blk, 2)
    for j in range(8):
        sc, m = scale_min(blk, j)
        d = d_all * F32(sc)
        if d == 0:
            continue
        dm = dmin_all * F32(m)
        for i in range(32):
            q = nearest_int((x[32 * j + i] + dm) / d)
            L[32 * j + i] = max(0, min(nmax, q))


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray, L: np.ndarray, lanes: np.ndarray,
                    weights: np.ndarray, scales: np.ndarray, mins: np.ndarray) -> None:
    fit_block(x, blk, L, lanes, weights, scales, mins, 15, F32(-1.0), F32(0.1), 20)
    _pack_levels(blk, L)


@inline
def _pack_levels(blk: np.ndarray, L: np.ndarray) -> None:
    for p in range(4):
        for l in range(32):
            blk[16 + 32 * p + l] = L[64 * p + l] | (L[64 * p + 32 + l] << 4)


@inline
def _quantize_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, sigma2: np.float32, L: np.ndarray,
                            lanes: np.ndarray, weights: np.ndarray, scales: np.ndarray, mins: np.ndarray,
                            sw: np.ndarray, Ls: np.ndarray, Lm: np.ndarray) -> None:
    fit_imatrix_block(x, qw, blk, L, lanes, weights, scales, mins, sw, Ls, Lm, 15, False)
    _pack_levels(blk, L)


def decode(context, builder, wt, w_, woff_, qs_offset: int, qh_offset: int | None,  # type: ignore[no-untyped-def]
           lane_order: bool):
    """IR for the formats with Q4_K's header (d, dmin, 12 bytes of 6-bit scales and mins) and 4-bit
    quants at byte ``qs_offset`` (Q5_K: fifth bits at ``qh_offset``; None for Q4_K): the block's 8
    chunks of 32 quants (weight order, or ``simd.lanes_dot``'s) and its 8 scales and 8 mins
    (``<8 x i8>``), from the block at byte ``woff_`` of the uint8 array ``w_``."""
    i8 = simd.I8
    hdr = simd.load_bytes(context, builder, wt, w_, woff_, 16)
    # The 6-bit scales and mins (layout above), all eight at once from the 12 packed bytes.
    low6_or_4 = simd.const_vec(i8, [63] * 4 + [15] * 4)
    high2 = simd.const_vec(i8, [0] * 4 + [0x30] * 4)  # bits 6-7 of a byte, moved to bits 4-5
    two = simd.splat_const(i8, 2, 8)
    sc = builder.or_(builder.and_(simd.pick(builder, hdr, [4, 5, 6, 7, 12, 13, 14, 15]), low6_or_4),
                     builder.and_(builder.lshr(simd.pick(builder, hdr, [4, 5, 6, 7, 4, 5, 6, 7]), two), high2))
    m = builder.lshr(simd.pick(builder, hdr, [8, 9, 10, 11, 12, 13, 14, 15]), simd.const_vec(i8, [0] * 4 + [4] * 4))
    m = builder.or_(builder.and_(m, low6_or_4),
                    builder.and_(builder.lshr(simd.pick(builder, hdr, [8, 9, 10, 11, 8, 9, 10, 11]), two), high2))
    if qh_offset is not None:
        qh = simd.load_bytes(context, builder, wt, w_, simd.offset(builder, woff_, qh_offset), lane_order=lane_order)
    chunks = []
    for p in range(4):
        qs = simd.load_bytes(context, builder, wt, w_, simd.offset(builder, woff_, qs_offset + 32 * p),
                             lane_order=lane_order)
        for nibble in range(2):  # chunk t = 2p + nibble: weights 64p + 32 nibble + l
            q = simd.bits8(builder, qs, 4 * nibble, 0xF)
            if qh_offset is not None:  # Q5_K: bit t of qh[l] is the quant's fifth bit
                q = builder.or_(q, simd.bits8(builder, qh, 2 * p + nibble, 1, to=4))
            chunks.append(q)
    return chunks, sc, m


def dequantize_intrinsic(block_bytes: int, qs_offset: int, qh_offset: int | None):  # type: ignore[no-untyped-def]
    """``dequantize_one(blocks, out, i, stream)`` (``simd.indexed_dequantize_intrinsic``) of the
    formats with Q4_K's header (see :func:`decode`), ``block_bytes`` a block: weight = (d * sc) * q
    - dmin * m, d and dmin the f16s at bytes 0 and 2 (``stream``: :func:`simd.store_weights`)."""

    def write(context, builder, wt, w_, woff_, ot, out_, ooff_, scales, stream_):  # type: ignore[no-untyped-def]
        d_, dmin_ = scales
        chunks, sc, m = decode(context, builder, wt, w_, woff_, qs_offset, qh_offset, lane_order=False)
        dl = simd.times_float(builder, d_, sc, signed=False)
        ml = simd.times_float(builder, dmin_, m, signed=False)
        simd.store_dequantized(context, builder, ot, out_, ooff_, chunks, 0, SUB_BLOCK_OF_CHUNK, dl, ml, stream_)

    return simd.indexed_dequantize_intrinsic(block_bytes, QK, simd.f16_header(0, 2), write)


def row_dot_intrinsic(block_bytes: int, qs_offset: int, qh_offset: int | None):  # type: ignore[no-untyped-def]
    """The row dot (``simd.row_sums_intrinsic``) of the formats with Q4_K's header (see
    :func:`decode`): ``ggml_vec_dot_q4_K_q8_K`` (and q5_K's). Per block, its aux32 lanes go into
    C's ``sums[l] += d * aux32[l]`` with d = d(x) * d(y); sumi, the sum over sub-blocks j of m[j] *
    (bsums[2j] + bsums[2j + 1]), into ``sumf -= dmin * sumi`` with dmin = dmin(x) * d(y). The row's
    ``q8``: Q8_K quants in ``simd.LANE_Q8_ORDER``; acts: (d (nb,) float32, bsums (nb, 16) int16)."""

    def lane_sums(step: simd.RowStep, m: int):  # type: ignore[no-untyped-def]
        b = step.builder
        chunks, sc, mins = decode(step.context, b, step.wt, step.w, step.weights_at(m, 0), qs_offset, qh_offset,
                                  lane_order=True)
        # sc * (pair sum of quant * q8) fits in 32 bits; the pair sums (at most 2 * 31 * 128) in 16.
        scales = [simd.pair_scales(b, sc, SUB_BLOCK_OF_CHUNK, u, signed=False) for u in range(4)]
        aux32 = simd.lanes_dot(b, chunks, scales, lambda t: step.quants(m, 32 * t))
        mins16 = b.zext(simd.pick(b, mins, [j // 2 for j in range(16)]), simd.vec(simd.I16, 16))
        return [aux32, simd.madd16(b, step.act_at(1, m, 16), mins16)]

    def scales(lanes: simd.BlockLanes):  # type: ignore[no-untyped-def]
        return lanes.builder.fmul(lanes.f16(0), lanes.act(0))

    def terms(lanes: simd.BlockLanes, sumi):  # type: ignore[no-untyped-def]
        b = lanes.builder
        return b.fneg(b.fmul(b.fmul(lanes.f16(2), lanes.act(0)), lanes.float(sumi)))

    # Steps of 4 blocks: 8 spilled their lanes to the stack.
    return simd.row_sums_intrinsic(simd.ScaledLanes(lane_sums, block_bytes, terms, lane_weights=QK,
                                                     lane_counts=(4, 1), lane_scales=scales))


# The sub-block (scale) of each half of each 32-weight chunk: chunk t is sub-block t.
SUB_BLOCK_OF_CHUNK = [(t, t) for t in range(8)]

_row_dot = row_dot_intrinsic(block_bytes=144, qs_offset=16, qh_offset=None)
_dequantize_one = dequantize_intrinsic(144, qs_offset=16, qh_offset=None)


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q4_K", qtype=GGMLQuantizationType.Q4_K, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_K",
                     loops=Loops(quantize_work=64, row_inputs="q8_k.row_inputs_in_lanes", scratch=qkx2_scratch(32, 8),
                                 quantize_imatrix="rows", imatrix_scratch=qkx2_scratch(32, 8, imatrix=True)))
