"""Q3_K: 256 weights in 110 bytes (3.4375 bits per weight).

One super-block of 16 sub-blocks of 16 weights, each with a 6-bit scale (stored plus 32); no mins::

    offset  size  field
         0    32  hmask   third bits: bit 4*h + s of byte l is that of weight 128*h + 32*s + l
                          (h = 0..1, s = 0..3, l = 0..31); a set bit means the quant is not offset
        32    64  qs      low 2 bits: byte 32*h + l holds, in bits 2s..2s+1, weight 128*h + 32*s + l
        96    12  scales  16 scales of 6 bits: the low 4 bits of scale j in byte j (j < 8, bits 0-3)
                          or byte j - 8 (j >= 8, bits 4-7); its high 2 bits in byte 8 + j % 4, bits
                          2 * (j // 4) .. 2 * (j // 4) + 1
       108     2  d       f16, super-block scale of the scales

    weight = d * (scale[j] - 32) * (q - (third bit ? 0 : 4))      (q = low 2 bits; j = index // 16)

Reference (``*_ref``, NumPy) and Numba kernels (same names without ``_ref``) follow llama.cpp's
``dequantize_row_q3_K``, ``quantize_row_q3_K_ref`` (``make_q3_quants`` per sub-block) and
``ggml_vec_dot_q3_K_q8_K`` (generic scalar).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import Loops, inline, jit
from ..jitmath import (
    F32,
    and32,
    first_largest,
    importance_weights,
    make_q3_quants,
    make_qx_quants_weighted,
    nearest_int,
    read_f16,
    shr32,
    write_f16,
)
from ..refmath import f16_to_f32, f32_to_f16_bits
from ..registry import BlockFormat, Ops
from . import q8_k

BLOCK_DTYPE = np.dtype([("hmask", "u1", 32), ("qs", "u1", 64), ("scales", "u1", 12), ("d", "<f2")])
QK = 256


# ----------------------------------------------------------------------------------------------
# Reference (NumPy)
# ----------------------------------------------------------------------------------------------


def unpack_scales_ref(packed: np.ndarray) -> np.ndarray:
    """The 16 scales of each block minus 32 (-32..31): uint8 (n, 12) -> int8 (n, 16)."""
    low = np.concatenate([packed[:, :8] & 0xF, packed[:, :8] >> 4], axis=1)
    high = (packed[:, 8:12][:, np.arange(16) % 4] >> (2 * (np.arange(16) // 4)).astype(np.uint8)) & 3
    return ((low | (high << 4)).astype(np.int16) - 32).astype(np.int8)


def pack_scales_ref(levels: np.ndarray) -> np.ndarray:
    """Inverse of :func:`unpack_scales_ref` for 6-bit levels (scale + 32, 0..63): (n, 16) -> uint8 (n, 12)."""
    levels = levels.astype(np.uint8)
    packed = np.zeros((levels.shape[0], 12), dtype=np.uint8)
    packed[:, :8] = (levels[:, :8] & 0xF) | ((levels[:, 8:] & 0xF) << 4)
    for j in range(16):
        packed[:, 8 + j % 4] |= (levels[:, j] >> 4) << (2 * (j // 4))
    return packed


def unpack_quants_ref(hmask: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """The 256 quants of each block (-4..3), in weight order: uint8 (n, 32) and (n, 64) -> int8 (n, 256)."""
    n = qs.shape[0]
    low = (qs.reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 3
    third = (hmask.reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1  # bit 4h + s
    return (low.reshape(n, 8, 32).astype(np.int8) - 4 * (1 - third.astype(np.int8))).reshape(n, QK)


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 110) -> ``out``, float32 (n_blocks, 256)."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN scales decode to inf/NaN, as in C
        b = blocks.view(BLOCK_DTYPE)[:, 0]
        dl = b["d"].astype(np.float32)[:, None] * unpack_scales_ref(b["scales"]).astype(np.float32)
        q = unpack_quants_ref(b["hmask"], b["qs"]).astype(np.float32).reshape(-1, 16, 16)
        out[...] = (dl[..., None] * q).reshape(-1, QK)


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 256) -> uint8 (n_blocks, 110), as ``quantize_row_q3_K_ref``."""
    n = x.shape[0]
    xs = x.reshape(n, 16, 16)
    scales, levels = refmath.groups_ref(refmath.make_q3_quants, xs, 4)
    max_scale = refmath.first_largest(scales)
    with np.errstate(all="ignore"):
        iscale = F32(-32) / max_scale
        # C assigns nearest_int() to an int8_t, then clamps to [-32, 31].
        ls = np.clip(refmath.nearest_int(iscale[:, None] * scales).astype(np.int8), -32, 31) + 32
        ls = np.where((max_scale != 0)[:, None], ls, 0)
        d = np.where(max_scale != 0, F32(1) / iscale, F32(0))
    return _blocks_ref(xs, levels, ls, d)


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (rows, n_per_row) with importance float32 (n_per_row,) -> uint8 (n_blocks, 110), as
    ``quantize_row_q3_K_impl``: each group of 16 fitted by ``make_qx_quants(16, 4, ...)`` weighted by
    ``refmath.block_importance_ref`` (``sigma2`` twice the block's mean square), the scales by
    ``make_qx_quants(16, 32, ...)`` weighted by each group's summed weights, then as
    :func:`quantize_ref`."""
    weights = refmath.block_importance_ref(x, imatrix, QK, lambda sum_x2: F32(2) * sum_x2 / F32(QK))
    n = weights.shape[0]
    xs = x.reshape(n, 16, 16)
    scales, levels = refmath.groups_ref(refmath.make_qx_quants, xs, 4, weights=weights)
    d, ls = refmath.make_qx_quants(scales, 32, refmath.group_sums_ref(weights, 16))
    return _blocks_ref(xs, levels, ls, d)


def _blocks_ref(xs: np.ndarray, levels: np.ndarray, ls: np.ndarray, d: np.ndarray) -> np.ndarray:
    """The end of both quantizers: the groups' scale levels ``ls`` (0..63) packed and ``d`` rounded to
    f16, every group of ``xs`` (float32 (n, 16, 16)) re-quantized against its rounded scale (a group
    whose scale rounds to zero keeps its ``levels``), and packed."""
    n = xs.shape[0]
    with np.errstate(all="ignore"):
        d_bits = f32_to_f16_bits(d)
        packed = pack_scales_ref(ls)
        d_sub = f16_to_f32(d_bits)[:, None] * unpack_scales_ref(packed).astype(np.float32)
        q = np.clip(refmath.nearest_int(xs / d_sub[..., None]), -4, 3) + 4
        levels = np.where((d_sub != 0)[..., None], q, levels).astype(np.uint8).reshape(n, 8, 32)
    out = np.empty(n, dtype=BLOCK_DTYPE)
    third = (levels >> 2) << np.arange(8, dtype=np.uint8).reshape(1, 8, 1)  # weight 32m + l: byte l, bit m
    out["hmask"] = np.bitwise_or.reduce(third, axis=1)
    low = (levels & 3).reshape(n, 2, 4, 32) << np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    out["qs"] = np.bitwise_or.reduce(low, axis=2).reshape(n, 64)
    out["scales"] = packed
    out["d"] = d_bits.view(np.float16)
    return out.view(np.uint8).reshape(n, BLOCK_DTYPE.itemsize)


def dot_parts_ref(w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each weight's quant and scale (int32 (rows, nb, 256), both signed) and each block's d
    (float32 (rows, nb)) of uint8 (rows, nb, 110) Q3_K blocks."""
    rows, nb, _ = w.shape
    b = w.view(BLOCK_DTYPE)[..., 0]
    q = unpack_quants_ref(b["hmask"].reshape(-1, 32), b["qs"].reshape(-1, 64)).reshape(rows, nb, QK)
    scales = np.repeat(unpack_scales_ref(b["scales"].reshape(-1, 12)).reshape(rows, nb, 16), 16, axis=-1)
    return q.astype(np.int32), scales.astype(np.int32), b["d"].astype(np.float32)


# Dot products on Q8_K activations, as the generic ``ggml_vec_dot_q3_K_q8_K``.
gemv_ref, dot_terms_ref = q8_k.lanes_dots_ref(dot_parts_ref, offset=4)  # the quants are stored plus 4


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


@jit
def _row_inputs(act: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Q8_K activations for values that are quants less 4 (``q8_k.row_inputs_with_pair_sums``)."""
    return q8_k.row_inputs_with_pair_sums(act, 4)


@inline
def _scale(blk: np.ndarray, j: int) -> np.int32:
    """Scale ``j`` of one block (uint8[110]) minus 32; see the layout above."""
    low = and32(blk[96 + j], 0xF) if j < 8 else shr32(blk[88 + j], 4)
    high = and32(shr32(blk[104 + j % 4], 2 * (j // 4)), 3)
    return np.int32((low | (high << 4)) - 32)


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray, L: np.ndarray, scales: np.ndarray) -> None:
    for j in range(16):
        scales[j] = make_q3_quants(x[16 * j:16 * j + 16], 4, L[16 * j:16 * j + 16])
    max_scale = first_largest(scales)
    for k in range(blk.shape[0]):
        blk[k] = 0
    if max_scale != 0:
        iscale = F32(-32) / max_scale
        for j in range(16):
            # C assigns nearest_int() to an int8_t, then clamps to [-32, 31].
            _pack_scale(blk, j, max(-32, min(31, np.int32(np.int8(nearest_int(iscale * scales[j]))))) + 32)
        write_f16(blk, 108, F32(1) / iscale)
    _requantize_and_pack(x, blk, L)


@inline
def _quantize_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, sigma2: np.float32, L: np.ndarray,
                            scales: np.ndarray, weights: np.ndarray, sw: np.ndarray, Ls: np.ndarray) -> None:
    """:func:`quantize_imatrix_ref` of one block (``sigma2`` of the row unused: Q3_K's is the block's)."""
    sum_x2 = F32(0)
    for i in range(QK):
        sum_x2 += x[i] * x[i]
    block_sigma2 = F32(2) * sum_x2 / F32(QK)
    for j in range(16):
        importance_weights(x[16 * j:16 * j + 16], qw[16 * j:16 * j + 16], block_sigma2, weights)
        total = F32(0)
        for i in range(16):
            total += weights[i]
        sw[j] = total
        scales[j] = make_qx_quants_weighted(x[16 * j:16 * j + 16], 4, L[16 * j:16 * j + 16], weights)
    d = make_qx_quants_weighted(scales, 32, Ls, sw)
    for k in range(blk.shape[0]):
        blk[k] = 0
    for j in range(16):
        _pack_scale(blk, j, np.int32(Ls[j]))
    write_f16(blk, 108, d)
    _requantize_and_pack(x, blk, L)


@inline
def _pack_scale(blk: np.ndarray, j: int, l: int) -> None:
    """Scale ``j``'s 6-bit level ``l`` into the zeroed scale bytes (96..107)."""
    if j < 8:
        blk[96 + j] = l & 0xF
    else:
        blk[88 + j] |= (l & 0xF) << 4
    blk[104 + j % 4] |= (l >> 4) << (2 * (j // 4))


@inline
def _requantize_and_pack(x: np.ndarray, blk: np.ndarray, L: np.ndarray) -> None:
    """Every group's levels against its rounded scale (kept where it is 0), then the hmask and qs."""
    d_all = read_f16(blk, 108)
    for j in range(16):
        d = d_all * F32(_scale(blk, j))
        if d == 0:
            continue
        for i in range(16):
            L[16 * j + i] = max(-4, min(3, nearest_int(x[16 * j + i] / d))) + 4
    for l in range(32):  # hmask byte l, bit m: the third bit of weight 32m + l (one loop per byte: vectorises)
        bits = 0
        for m in range(8):
            bits |= (L[32 * m + l] >> 2) << m
        blk[l] = bits
    for h in range(2):
        for l in range(32):
            o = 128 * h + l
            blk[32 + 32 * h + l] = (L[o] & 3) | ((L[o + 32] & 3) << 2) | ((L[o + 64] & 3) << 4) | ((L[o + 96] & 3) << 6)


# The sub-blocks (scales) of the two halves of each 32-weight chunk.
_SUB_BLOCK_OF_CHUNK = [(2 * t, 2 * t + 1) for t in range(8)]


def _decode(context, builder, wt, w_, woff_, lane_order: bool):  # type: ignore[no-untyped-def]
    """IR: one block's 8 chunks of 32 quants (0..7, the true quant is 4 less; weight order, or
    ``simd.lanes_dot``'s) and its 16 scales minus 32 (int8), from the block at byte ``woff_`` of the
    uint8 array ``w_``."""
    i8 = simd.I8
    packed = simd.load_bytes(context, builder, wt, w_, simd.offset(builder, woff_, 96), 12)
    low = builder.and_(builder.lshr(simd.pick(builder, packed, list(range(8)) * 2),
                                    simd.const_vec(i8, [0] * 8 + [4] * 8)), simd.splat_const(i8, 15, 16))
    high = builder.and_(builder.lshr(simd.pick(builder, packed, [8 + j % 4 for j in range(16)]),
                                     simd.const_vec(i8, [2 * (j // 4) for j in range(16)])),
                        simd.splat_const(i8, 3, 16))
    scales = builder.sub(builder.or_(low, builder.shl(high, simd.splat_const(i8, 4, 16))),
                         simd.splat_const(i8, 32, 16))
    hm = simd.load_bytes(context, builder, wt, w_, woff_, lane_order=lane_order)
    chunks = []
    for h in range(2):
        qs = simd.load_bytes(context, builder, wt, w_, simd.offset(builder, woff_, 32 + 32 * h), lane_order=lane_order)
        for s in range(4):  # chunk t = 4h + s: the 2 bits at 2s of qs and bit t of hmask
            third = simd.bits8(builder, hm, 4 * h + s, 1, to=2)
            chunks.append(builder.or_(simd.bits8(builder, qs, 2 * s, 3), third))
    return chunks, scales


# ``ggml_vec_dot_q3_K_q8_K``, a row at a time, and the dequantize of a block.
_row_dot, _dequantize_one = simd.offset_lanes_kernels(_decode, 110, 108, 4, _SUB_BLOCK_OF_CHUNK)


# The block quantizer's scratch arrays given importance: levels, scales, one group's weights, the
# groups' summed weights, the scales' levels.
_IMATRIX_SCRATCH = (("L", "uint8", QK), ("scales", "float32", 16), ("weights", "float32", 16), ("sw", "float32", 16),
                    ("Ls", "uint8", 16))


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q3_K", qtype=GGMLQuantizationType.Q3_K, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_K",
                     loops=Loops(quantize_work=64, row_inputs="q3_k._row_inputs", quantize_imatrix="rows",
                                 imatrix_scratch=_IMATRIX_SCRATCH,
                                 scratch=(("L", "int8", QK), ("scales", "float32", 16))))
