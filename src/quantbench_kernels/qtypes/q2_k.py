"""Q2_K: 256 weights in 84 bytes (2.625 bits per weight).

One super-block of 16 sub-blocks of 16 weights; each sub-block has a 4-bit scale and a 4-bit min::

    offset  size  field
         0    16  scales  byte j: scale of sub-block j in bits 0-3, its min in bits 4-7
        16    64  qs      2-bit quants: byte 32*h + l holds, in bits 2s..2s+1 (s = 0..3), the
                          weight 128*h + 32*s + l (h = 0..1, l = 0..31)
        80     2  d       f16, super-block scale of the 4-bit scales
        82     2  dmin    f16, super-block scale of the 4-bit mins

    weight = d * (scales[j] & 15) * q - dmin * (scales[j] >> 4)      (j = weight index // 16)

Reference (``*_ref``, NumPy) and Numba kernels (same names without ``_ref``) follow llama.cpp's
``dequantize_row_q2_K``, ``quantize_row_q2_K_ref`` and ``ggml_vec_dot_q2_K_q8_K`` (generic scalar).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType
from llvmlite import ir

from .. import jitmath, refmath, simd
from ..compilation import Loops, inline, jit
from ..jitmath import F32, nearest_int, read_f16, write_f16
from ..refmath import f16_to_f32, f32_to_f16_bits
from ..registry import BlockFormat, DotTerms, Ops
from . import q8_k

BLOCK_DTYPE = np.dtype([("scales", "u1", 16), ("qs", "u1", 64), ("d", "<f2"), ("dmin", "<f2")])
QK = 256


# ----------------------------------------------------------------------------------------------
# Reference (NumPy)
# ----------------------------------------------------------------------------------------------


def unpack_quants_ref(qs: np.ndarray) -> np.ndarray:
    """The 256 two-bit quants of each block, in weight order: uint8 (n, 64) -> uint8 (n, 256)."""
    q = qs.reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    return (q & 3).reshape(-1, QK)


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 84) -> ``out``, float32 (n_blocks, 256)."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN scales decode to inf/NaN, as in C
        b = blocks.view(BLOCK_DTYPE)[:, 0]
        d = b["d"].astype(np.float32)[:, None]
        dmin = b["dmin"].astype(np.float32)[:, None]
        dl = d * (b["scales"] & 0xF)
        ml = dmin * (b["scales"] >> 4)
        q = unpack_quants_ref(b["qs"]).reshape(-1, 16, 16)
        weights = dl[..., None] * q - ml[..., None]
        out[...] = weights.reshape(-1, QK)


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 256) -> uint8 (n_blocks, 84), as ``quantize_row_q2_K_ref``."""
    n = x.shape[0]
    xs = x.reshape(n, 16, 16)
    scales, mins, levels, max_scale, max_min = refmath.qkx2_blocks_ref(xs, np.abs(xs), 3, -0.5, 0.1, 15, use_mad=True)
    with np.errstate(all="ignore"):
        # C assigns nearest_int() to the uint8_t scales byte, then ORs the min in above it.
        ls = refmath.nearest_int((F32(15) / max_scale)[:, None] * scales)
        ls = np.where((max_scale > 0)[:, None], ls, 0)
        lm = refmath.nearest_int((F32(15) / max_min)[:, None] * mins)
        lm = np.where((max_min > 0)[:, None], lm, 0)
        d = np.where(max_scale > 0, max_scale / F32(15), F32(0))
        dmin = np.where(max_min > 0, max_min / F32(15), F32(0))
    return _blocks_ref(xs, levels, ls, lm, d, dmin)


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (rows, n_per_row) with importance float32 (n_per_row,) -> uint8 (n_blocks, 84), as
    ``quantize_row_q2_K_impl``: each group of 16 fitted by ``make_qkx3_quants(16, 3, ..., -0.9f, 0.05f,
    36, false)`` (``refmath.make_qkx2_quants``, the same for finite values) weighted by
    ``refmath.block_importance_ref`` (``sigma2``: the block's mean square), the scales and mins by
    ``make_qp_quants(16, 15, ...)`` weighted by each group's summed weights, then as
    :func:`quantize_ref`."""
    weights = refmath.block_importance_ref(x, imatrix, QK, lambda sum_x2: sum_x2 / F32(QK))
    n = weights.shape[0]
    xs = x.reshape(n, 16, 16)
    scales, mins, levels = refmath.make_qkx2_quants(xs.reshape(-1, 16), weights.reshape(-1, 16), 3, -0.9, 0.05, 36,
                                                    use_mad=False)
    sw = refmath.group_sums_ref(weights, 16)
    d, ls = refmath.make_qp_quants(scales.reshape(n, 16), 15, sw)
    dmin, lm = refmath.make_qp_quants(mins.reshape(n, 16), 15, sw)
    return _blocks_ref(xs, levels.reshape(n, 16, 16), ls.astype(np.int64), lm.astype(np.int64), d, dmin)


def _blocks_ref(xs: np.ndarray, levels: np.ndarray, ls: np.ndarray, lm: np.ndarray, d: np.ndarray,
                dmin: np.ndarray) -> np.ndarray:
    """The end of both quantizers: each group's scale level ``ls`` and min level ``lm`` in a byte, d
    and dmin rounded to f16, every group of ``xs`` (float32 (n, 16, 16)) re-quantized against its
    rounded scale and min (a group whose scale rounds to zero keeps its ``levels``), and packed."""
    n = xs.shape[0]
    # C assigns the levels to the uint8_t scales byte, then ORs the min in above it.
    packed = ((ls | (lm << 4)) & 0xFF).astype(np.uint8)
    with np.errstate(all="ignore"):
        d_bits, dmin_bits = f32_to_f16_bits(d), f32_to_f16_bits(dmin)
        d_sub = f16_to_f32(d_bits)[:, None] * (packed & 0xF)
        dm_sub = f16_to_f32(dmin_bits)[:, None] * (packed >> 4)
        q = np.clip(refmath.nearest_int((xs + dm_sub[..., None]) / d_sub[..., None]), 0, 3)
        levels = np.where((d_sub != 0)[..., None], q, levels).astype(np.uint8)

    out = np.empty(n, dtype=BLOCK_DTYPE)
    out["scales"] = packed
    q = levels.reshape(n, 2, 4, 32)
    out["qs"] = (q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)).reshape(n, 64)
    out["d"] = d_bits.view(np.float16)
    out["dmin"] = dmin_bits.view(np.float16)
    return out.view(np.uint8).reshape(n, BLOCK_DTYPE.itemsize)


def gemv_ref(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Rows of Q2_K blocks times one Q8_K vector, as the generic ``ggml_vec_dot_q2_K_q8_K``.

    ``w``: uint8 (rows, nb, 84); ``act``: uint8 (nb, 292). Returns float32 (rows,). Per block the
    integer sums are exact; then ``sumf += dall * isum - dmin * summs`` block after block.
    """
    rows, nb, _ = w.shape
    b = w.view(BLOCK_DTYPE)[..., 0]
    y = q8_k.fields_ref(act)
    q2 = _quants_ref(b).reshape(rows, nb, 16, 16)
    q8 = y["qs"].reshape(nb, 16, 16).astype(np.int32)
    scales = b["scales"].astype(np.int32)
    isum = ((q2 * q8).sum(axis=3) * (scales & 0xF)).sum(axis=2)  # (rows, nb), exact integers
    summs = (y["bsums"].astype(np.int32) * (scales >> 4)).sum(axis=2)

    sumf = np.zeros(rows, dtype=np.float32)
    with np.errstate(all="ignore"):
        for i in range(nb):
            dall = y["d"][i] * b["d"][:, i].astype(np.float32)
            dmin = y["d"][i] * b["dmin"][:, i].astype(np.float32)
            sumf = sumf + (dall * isum[:, i].astype(np.float32) - dmin * summs[:, i].astype(np.float32))
    return sumf


def _quants_ref(b: np.ndarray) -> np.ndarray:
    """int32 (rows, nb, 256) quants of structured (rows, nb) Q2_K blocks."""
    return unpack_quants_ref(b["qs"].reshape(-1, 64)).reshape(*b.shape, QK).astype(np.int32)


def dot_terms_ref(w: np.ndarray, act: np.ndarray) -> DotTerms:
    """The exact parts of Q2_K x Q8_K dot products (``DotTerms``): ``dall * isum`` and
    ``dmin * summs`` of each block."""
    b = w.view(BLOCK_DTYPE)[..., 0]
    scales = np.repeat(b["scales"].astype(np.int32), 16, axis=-1)
    return q8_k.dot_terms_ref(act, _quants_ref(b), scales & 0xF, b["d"].astype(np.float32),
                              scales >> 4, b["dmin"].astype(np.float32))


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray, L: np.ndarray, lanes: np.ndarray,
                    weights: np.ndarray, scales: np.ndarray, mins: np.ndarray) -> None:
    for j in range(16):
        xj = x[16 * j:16 * j + 16]
        for i in range(16):
            weights[i] = abs(xj[i])
        scales[j], mins[j] = jitmath.make_qkx2_quants(xj, weights, L[16 * j:16 * j + 16], lanes, 3, F32(-0.5),
                                                      F32(0.1), 15, True)
    max_scale = jitmath.running_max(scales)
    max_min = jitmath.running_max(mins)
    if max_scale > 0:
        iscale = F32(15) / max_scale
        for j in range(16):
            blk[j] = nearest_int(iscale * scales[j]) & 0xFF
        write_f16(blk, 80, max_scale / F32(15))
    else:
        for j in range(16):
            blk[j] = 0
        write_f16(blk, 80, F32(0))
    if max_min > 0:
        iscale = F32(15) / max_min
        for j in range(16):
            blk[j] = (np.int32(blk[j]) | (nearest_int(iscale * mins[j]) << 4)) & 0xFF
        write_f16(blk, 82, max_min / F32(15))
    else:
        write_f16(blk, 82, F32(0))
    _requantize_and_pack(x, blk, L)


@inline
def _quantize_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, sigma2: np.float32, L: np.ndarray,
                            lanes: np.ndarray, weights: np.ndarray, scales: np.ndarray, mins: np.ndarray,
                            sw: np.ndarray, Ls: np.ndarray, Lm: np.ndarray) -> None:
    """:func:`quantize_imatrix_ref` of one block (``sigma2`` of the row unused: Q2_K's is the block's)."""
    sum_x2 = F32(0)
    for i in range(QK):
        sum_x2 += x[i] * x[i]
    block_sigma2 = sum_x2 / F32(QK)
    for j in range(16):
        xj = x[16 * j:16 * j + 16]
        jitmath.importance_weights(xj, qw[16 * j:16 * j + 16], block_sigma2, weights)
        total = F32(0)
        for i in range(16):
            total += weights[i]
        sw[j] = total
        scales[j], mins[j] = jitmath.make_qkx2_quants(xj, weights, L[16 * j:16 * j + 16], lanes, 3, F32(-0.9),
                                                      F32(0.05), 36, False)
    d = jitmath.make_qp_quants(scales, 15, Ls, sw)
    dmin = jitmath.make_qp_quants(mins, 15, Lm, sw)
    for j in range(16):
        blk[j] = (np.int32(Ls[j]) | (np.int32(Lm[j]) << 4)) & 0xFF
    write_f16(blk, 80, d)
    write_f16(blk, 82, dmin)
    _requantize_and_pack(x, blk, L)


@inline
def _requantize_and_pack(x: np.ndarray, blk: np.ndarray, L: np.ndarray) -> None:
    """Every group's levels against its rounded scale and min (kept where the scale is 0), then
    the quants packed four to a byte."""
    d_all = read_f16(blk, 80)
    dmin_all = read_f16(blk, 82)
    for j in range(16):
        sc = np.int32(blk[j])
        d = d_all * F32(sc & 0xF)
        if d == 0:
            continue
        dm = dmin_all * F32(sc >> 4)
        for i in range(16):
            q = nearest_int((x[16 * j + i] + dm) / d)
            L[16 * j + i] = max(0, min(3, q))
    for h in range(2):
        for l in range(32):
            o = 128 * h + l
            blk[16 + 32 * h + l] = L[o] | (L[o + 32] << 2) | (L[o + 64] << 4) | (L[o + 96] << 6)


# The sub-blocks (scales) of the two halves of each 32-weight chunk (chunk t = 4h + s: bits 2s of
# bytes 32h..32h + 31, weights 32t..32t + 31).
_SUB_BLOCK_OF_CHUNK = [(2 * t, 2 * t + 1) for t in range(8)]


def _decode(context, builder, wt, w_, woff_):  # type: ignore[no-untyped-def]
    """IR: one block's 8 chunks of 32 quants (0..3, weight order) and its 16 scale bytes (scale in
    bits 0-3, min in bits 4-7), from the block at byte ``woff_`` of the uint8 array ``w_``."""
    scales = simd.load_bytes(context, builder, wt, w_, woff_, 16)
    chunks = []
    for h in range(2):
        qs = simd.load_bytes(context, builder, wt, w_, simd.offset(builder, woff_, 16 + 32 * h))
        chunks.extend(simd.bits8(builder, qs, 2 * s, 3) for s in range(4))
    return chunks, scales


def _write_block(context, builder, wt, w_, woff_, ot, out_, ooff_, scales, stream_):  # type: ignore[no-untyped-def]
    """IR: the Q2_K block at byte ``woff_`` of ``w`` into ``out`` from element ``ooff_``, given its
    decoded ``d`` and ``dmin`` (``scales``): weight = (d * scale) * q - dmin * min."""
    d_, dmin_ = scales
    chunks, sc = _decode(context, builder, wt, w_, woff_)
    dl = simd.times_float(builder, d_, builder.and_(sc, simd.splat_const(simd.I8, 15, 16)), signed=False)
    ml = simd.times_float(builder, dmin_, builder.lshr(sc, simd.splat_const(simd.I8, 4, 16)), signed=False)
    simd.store_dequantized(context, builder, ot, out_, ooff_, chunks, 0, _SUB_BLOCK_OF_CHUNK, dl, ml, stream_)


_dequantize_one = simd.indexed_dequantize_intrinsic(84, QK, simd.f16_header(80, 82), _write_block)


def _lane_sums(step: simd.RowStep, m: int):  # type: ignore[no-untyped-def]
    """IR: block m's integer sums for ``ggml_vec_dot_q2_K_q8_K`` (``simd.row_sums_intrinsic``), as
    ``<8 x i32>`` lanes that add up to them: isum, the sum of scale * quant * q8 over the block, and
    summs, the sum of min * bsums over its 16 sub-blocks. Chunk t (32 weights, its two sub-blocks
    2t and 2t + 1): pmaddubsw of the quants (0..3) and q8 leaves pairs of products, lanes 0-7 of
    sub-block 2t and 8-15 of 2t + 1 (at most 2 * 3 * 128: no saturation), and pmaddwd multiplies
    each pair sum by its scale (at most 15) and adds two of them."""
    b, i16 = step.builder, simd.vec(simd.I16, 16)
    chunks, scales = _decode(step.context, b, step.wt, step.w, step.weights_at(m, 0))
    sc = b.and_(scales, simd.splat_const(simd.I8, 15, 16))
    # The scales of half h of the block, 16-bit, in both 128-bit halves: chunk t's scale vector is
    # then one in-lane byte shuffle of halves[t // 4] (x86 has no cross-lane 16-bit shuffle).
    halves = [b.zext(simd.pick(b, sc, [8 * h + k % 8 for k in range(16)]), i16) for h in range(2)]
    products = []
    for t, chunk in enumerate(chunks):
        h, s = divmod(t, 4)
        scale = simd.pick(b, halves[h], [2 * s] * 8 + [8 + 2 * s + 1] * 8)
        products.append(simd.madd16(b, simd.maddubs(b, chunk, step.quants(m, 32 * t)), scale))
    return [simd.tree_sum(b, products), _summs(step, m, scales)]


def _summs(step: simd.RowStep, m: int, scales):  # type: ignore[no-untyped-def]
    """IR: block m's summs as ``<8 x i32>`` lanes: its 16 mins (bits 4-7 of ``scales``, the
    block's 16 scale bytes) times the Q8_K bsums, pairwise (pmaddwd)."""
    b = step.builder
    mins = b.zext(b.lshr(scales, simd.splat_const(simd.I8, 4, 16)), simd.vec(simd.I16, 16))
    return simd.madd16(b, mins, step.act_at(1, m, 16))


def _terms(lanes: simd.BlockLanes, isum, summs):  # type: ignore[no-untyped-def]
    """IR: ``dall * isum - dmin * summs`` with dall = yd * d, dmin = yd * dmin (acts: yd, bsums)."""
    b = lanes.builder
    yd = lanes.act(0)
    dall, dmin = b.fmul(yd, lanes.f16(80)), b.fmul(yd, lanes.f16(82))
    return b.fsub(b.fmul(dall, lanes.float(isum)), b.fmul(dmin, lanes.float(summs)))


# Where the CPU has AVX-512 VBMI and VNNI (simd.WIDE_LOOKUP_DOT), a block's isum takes 4 steps of
# all 64 quant bytes: step s reads the quants in bits 2s..2s + 1 of each byte, that is chunks s
# and 4 + s (byte 32h + l: weight 128h + 32s + l, sub-block j = 8h + 2s + l // 16). Each byte
# becomes an index into a 64-byte table with the quant q in bits 4-5 and j in bits 0-3; entry
# 16q + j of the table is q * scale_j (at most 3 * 15 = 45: an unsigned byte), so one vpermb gives
# the 64 scaled quants and one vpdpbusd adds their products with the activation's quants, where
# the AVX2 path takes a scale shuffle, pmaddubsw and pmaddwd per 32 weights. The activation's
# quants are stored in the steps' order once per vector: position 64s + 32h + l holds the quant
# of weight 128h + 32s + l.
_WIDE_Q8_POSITIONS = [128 * h + 32 * s + k for s in range(4) for h in range(2) for k in range(32)]
_WIDE_SUB_BLOCKS = [[8 * h + 2 * s + k // 16 for h in range(2) for k in range(32)] for s in range(4)]


def _lane_sums_wide(step: simd.RowStep, m: int):  # type: ignore[no-untyped-def]
    """IR: :func:`_lane_sums` by table lookups (see above): the same two sums, isum in the lanes
    of a ``<16 x i32>`` folded to ``<8 x i32>``."""
    b = step.builder
    at = step.weights_at(m, 0)
    scales = simd.load_bytes(step.context, b, step.wt, step.w, at, 16)
    qs = simd.load_bytes(step.context, b, step.wt, step.w, simd.offset(b, at, 16), 64)
    # Row r of the table (bytes 16r..16r + 15) is r times the 16 scales: the scales in every row,
    # summed three times, masked to rows >= 1, rows >= 2 and rows >= 3.
    each_row = simd.pick(b, b.and_(scales, simd.splat_const(simd.I8, 15, 16)), [k % 16 for k in range(64)])
    from_row = [simd.const_vec(simd.I8, [0xFF if k // 16 >= r else 0 for k in range(64)]) for r in (1, 2, 3)]
    table = simd.tree_sum(b, [b.and_(each_row, mask) for mask in from_row])
    isum = ir.Constant(simd.vec(simd.I32, 16), [0] * 16)
    for s in range(4):
        index = b.or_(simd.bits8(b, qs, 2 * s, 3, to=4), simd.const_vec(simd.I8, _WIDE_SUB_BLOCKS[s]))
        isum = simd.dot_quads64(b, isum, simd.lookup64(b, table, index), step.quants(m, 64 * s, 64))
    return [simd.fold(b, isum, 8), _summs(step, m, scales)]


# Four blocks a step on the wide path, not eight: with eight LLVM spilled zmm registers.
if simd.WIDE_LOOKUP_DOT:
    _row_dot = simd.row_sums_intrinsic(simd.RowSums(_lane_sums_wide, 84, _terms, lane_weights=QK, lane_counts=(4, 1)))
    _Q8_ORDER = simd.byte_shuffle(_WIDE_Q8_POSITIONS)
else:
    _row_dot = simd.row_sums_intrinsic(simd.RowSums(_lane_sums, 84, _terms, lane_weights=QK))
    _Q8_ORDER = q8_k.IN_WEIGHT_ORDER


@jit
def _row_inputs(act: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """(acts: d and bsums, the quants in :data:`_Q8_ORDER`) of Q8_K activations, compiled once for
    the serial and parallel gemv."""
    d, q8, bsums = q8_k.unpack(act, _Q8_ORDER)
    return (d, bsums), q8


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q2_K", qtype=GGMLQuantizationType.Q2_K, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_K",
                     loops=Loops(quantize_work=64, row_inputs="q2_k._row_inputs", scratch=jitmath.qkx2_scratch(16, 16),
                                 quantize_imatrix="rows", imatrix_scratch=jitmath.qkx2_scratch(16, 16, imatrix=True)))
