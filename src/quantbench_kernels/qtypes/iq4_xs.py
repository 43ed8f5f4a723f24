"""IQ4_XS: 256 weights in 136 bytes (4.25 bits per weight), IQ4_NL's non-linear values in eight
sub-blocks of 32 with 6-bit scales, dot products on Q8_K activations.

::

    offset  size  field
         0     2  d         f16, super-block scale
         2     2  scales_h  u16, little-endian: bits 2j..2j+1 are the high 2 bits of sub-block j's scale
         4     4  scales_l  the low 4 bits of the scales: byte j holds sub-block 2j in its low
                            nibble and sub-block 2j + 1 in its high nibble
         8   128  qs        4-bit indices into KVALUES (IQ4_NL's table), 16 bytes per sub-block:
                            byte 16s + j holds weight 32s + j in its low nibble and weight
                            32s + 16 + j in its high nibble

    weight = (d * (ls - 32)) * KVALUES[q]      (ls: the sub-block's 6-bit scale)

Quantize is llama.cpp's ``quantize_row_iq4_nl_impl`` for 256 weights in sub-blocks of 32 without
an importance matrix (``quantize_iq4_xs``, which ``quantize_row_iq4_xs_ref`` calls): IQ4_NL's
search per sub-block, ``d = -max_scale / 32``, each sub-block's scale rounded to 6 bits and its
weights re-quantized against it. The dot product follows ``ggml_vec_dot_iq4_xs_q8_K_generic``:
``sumf += (d * yd * (ls - 32)) * sumi`` sub-block after sub-block.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import Loops, inline, jit
from ..jitmath import F32, first_largest, importance_weights, nearest_int, write_f16
from ..registry import BlockFormat, DotTerms, Ops
from . import iq4_nl, q8_k

BLOCK_DTYPE = np.dtype([("d", "<f2"), ("scales_h", "<u2"), ("scales_l", "u1", 4), ("qs", "u1", 128)])
QK = 256
BLOCK_BYTES = 136


# ----------------------------------------------------------------------------------------------
# Reference (NumPy)
# ----------------------------------------------------------------------------------------------


def values_ref(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of uint8 (..., 136) blocks: d float32 (...,), each sub-block's ls - 32 (int32 (..., 8)) and
    each weight's table value (int32 (..., 256))."""
    b = blocks.view(BLOCK_DTYPE)[..., 0]
    j = np.arange(8)
    low = (b["scales_l"][..., j // 2] >> (4 * (j % 2))) & 0xF
    high = (b["scales_h"][..., None] >> (2 * j)) & 3
    qs = b["qs"].reshape(b.shape + (8, 16))
    values = iq4_nl.KVALUES.astype(np.int32)[refmath.nibbles_ref(qs)].reshape(b.shape + (QK,))
    return b["d"].astype(np.float32), (low | (high << 4)).astype(np.int32) - 32, values


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 136) -> ``out``, float32 (n_blocks, 256)."""
    d, scales, v = values_ref(blocks)
    dl = d[:, None] * scales.astype(np.float32)
    out[...] = (dl[:, :, None] * v.reshape(-1, 8, 32)).reshape(-1, QK)


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 256) -> uint8 (n_blocks, 136), as ``quantize_iq4_xs`` without an
    importance matrix."""
    return _quantize_ref(x, None)


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (rows, n_per_row) with importance float32 (n_per_row,) -> uint8 (n_blocks, 136), as
    ``quantize_iq4_xs`` given ``quant_weights``: :func:`quantize_ref` with the search's weights
    from ``iq4_nl.importance_weights_ref``."""
    return _quantize_ref(x.reshape(-1, QK), iq4_nl.importance_weights_ref(x, imatrix, QK))


def _quantize_ref(x: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    n = x.shape[0]
    sub = x.reshape(n * 8, 32)
    scales = iq4_nl.search_ref(sub, weight)[0].reshape(n, 8)
    d = -refmath.first_largest(scales) / F32(32)
    inv = np.where(d != 0, F32(1) / d, F32(0)).astype(np.float32)
    ls = np.clip(refmath.nearest_int(inv[:, None] * scales), -32, 31)
    dl = d[:, None] * ls.astype(np.float32)
    inv_dl = np.where(dl != 0, F32(1) / dl, F32(0)).astype(np.float32)
    levels = iq4_nl.best_index_ref(inv_dl.reshape(-1, 1) * sub)
    ls = (ls + 32).astype(np.uint16)
    out = np.empty(n, dtype=BLOCK_DTYPE)
    out["d"] = refmath.f32_to_f16_bits(d).view(np.float16)
    out["scales_h"] = ((ls >> 4) << (2 * np.arange(8, dtype=np.uint16))).sum(axis=1, dtype=np.uint16)
    out["scales_l"] = (ls[:, 0::2] & 0xF) | ((ls[:, 1::2] & 0xF) << 4)
    out["qs"] = refmath.pack_nibbles_ref(levels).reshape(n, 128)
    return out.view(np.uint8).reshape(-1, BLOCK_BYTES)


def _sub_block_sums(w: np.ndarray, act: np.ndarray) -> tuple[np.ndarray, ...]:
    """Of rows of blocks (uint8 (rows, nb, 136)) and Q8_K activations (nb, 292): d (rows, nb) and
    yd (nb,) float32, and per sub-block (rows, nb, 8) ls - 32, the exact sum of value * q8 and
    the sum of its magnitudes (int64)."""
    d, scales, v = values_ref(w)
    y = q8_k.fields_ref(act)
    prod = (v.astype(np.int64) * y["qs"].astype(np.int64)).reshape(v.shape[:-1] + (8, 32))
    return d, y["d"], scales, prod.sum(axis=-1), np.abs(prod).sum(axis=-1)


def gemv_ref(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
    """uint8 (rows, nb, 136) times Q8_K activations (nb, 292) -> float32 (rows,), as the generic dot."""
    d, yd, scales, sumi, _ = _sub_block_sums(w, act)
    d4d8 = d * yd
    sumf = np.zeros(w.shape[0], dtype=np.float32)
    for b in range(w.shape[1]):
        for s in range(8):
            sumf = sumf + (d4d8[:, b] * scales[:, b, s].astype(np.float32)) * sumi[:, b, s].astype(np.float32)
    return sumf


def dot_terms_ref(w: np.ndarray, act: np.ndarray) -> DotTerms:
    """The exact parts of IQ4_XS x Q8_K dot products (:class:`DotTerms`): one term per sub-block,
    ``d * yd`` (exact in float64) times (ls - 32) times the sum of value * q8."""
    d, yd, scales, sumi, magnitude = _sub_block_sums(w, act)
    coef = d.astype(np.float64) * yd.astype(np.float64)
    shape = (w.shape[0], w.shape[1] * 8)  # explicit: reshape(0, -1) cannot infer the -1
    return DotTerms(coef=np.repeat(coef[..., None], 8, axis=-1).reshape(shape),
                    ints=(scales * sumi).reshape(shape), abs_ints=(np.abs(scales) * magnitude).reshape(shape))


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


@inline
def _scale(blk: np.ndarray, s: int) -> np.int32:
    """Sub-block ``s``'s ls - 32."""
    low = (np.int32(blk[4 + s // 2]) >> (4 * (s % 2))) & 0xF
    high = ((np.int32(blk[2]) | (np.int32(blk[3]) << 8)) >> (2 * s)) & 3
    return (low | (high << 4)) - 32


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray, scales: np.ndarray, scratch: np.ndarray) -> None:
    for s in range(8):
        scales[s] = iq4_nl.search(x[32 * s:32 * s + 32], scratch)
    _write_block(x, blk, scales)


@inline
def _quantize_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, sigma2: np.float32, scales: np.ndarray,
                            scratch: np.ndarray, weights: np.ndarray) -> None:
    block_sigma2 = iq4_nl.super_block_sigma2(x)
    for s in range(8):
        xs = x[32 * s:32 * s + 32]
        importance_weights(xs, qw[32 * s:32 * s + 32], block_sigma2, weights)
        scales[s] = iq4_nl.search_weighted(xs, scratch, weights)
    _write_block(x, blk, scales)


@inline
def _write_block(x: np.ndarray, blk: np.ndarray, scales: np.ndarray) -> None:
    d = -first_largest(scales) / F32(32)
    inv = F32(1) / d if d != 0 else F32(0)
    write_f16(blk, 0, d)
    scales_h = np.int32(0)
    for s in range(8):
        ls = max(-32, min(31, nearest_int(inv * scales[s])))
        dl = d * F32(ls)
        iq4_nl.pack_levels(x[32 * s:32 * s + 32], F32(1) / dl if dl != 0 else F32(0), blk, 8 + 16 * s)
        ls += 32
        if s % 2 == 0:
            blk[4 + s // 2] = np.uint8(ls & 0xF)
        else:
            blk[4 + s // 2] |= np.uint8((ls & 0xF) << 4)
        scales_h |= (ls >> 4) << (2 * s)
    blk[2] = np.uint8(scales_h & 0xFF)
    blk[3] = np.uint8(scales_h >> 8)


# The activation quants of a block as :func:`_block_sums` reads them: per pair p of sub-blocks, the
# first 16 of sub-block 2p, of 2p + 1, then the last 16 of each (the order of the low nibbles of
# a 32-byte load of qs, then of its high nibbles: ``simd.PAIR_ORDER``).
PAIR_ORDER = [64 * (k // 64) + simd.PAIR_ORDER[k % 64] for k in range(QK)]
_in_pair_order = simd.byte_shuffle(PAIR_ORDER)


@jit
def _row_inputs(x: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """(acts: d float32 (nb,) and the quants' magnitudes uint8 (nb * 256,), 128 for -128; the
    quants int8 (nb * 256,) in :data:`PAIR_ORDER`) of uint8 (nb, 292) Q8_K activations, or of
    float32 values that ``q8_k.blocks`` quantizes first."""
    d, q, _ = q8_k.unpack(x, _in_pair_order)
    magnitudes = np.empty(q.size, dtype=np.uint8)
    for k in range(q.size):
        magnitudes[k] = np.uint8(abs(np.int32(q[k])))
    return (d, magnitudes), q


def _block_sums(step: simd.RowStep, n: int):  # type: ignore[no-untyped-def]
    """IR: the 8 sub-blocks' integer dots of the step's block (its n = 8 lanes), lane s of one
    ``<8 x i32>`` (``simd.row_sums_intrinsic``'s ``step_sums``). One 32-byte load of qs holds two sub-blocks: its low
    nibbles the first 16 weights of each, its high nibbles the last 16, which the activation's
    :data:`PAIR_ORDER` matches. The table values (never -128) take the quants' signs and pmaddubsw
    multiplies them with the quants' magnitudes (acts: dy, magnitudes): a pair is at most 2 x 128
    x 127, no 16-bit saturation."""
    b = step.builder
    pairs = []
    for p in range(4):
        qs = simd.load_bytes(step.context, b, step.wt, step.w, step.weights_at(0, 8 + 32 * p))
        dots = []
        for e in range(2):
            values = simd.lookup16(b, iq4_nl.KVALUES.tolist(), simd.bits8(b, qs, 4 * e, 0xF))
            k = 64 * p + 32 * e
            signed = simd.psign(b, values, step.quants(0, k))
            dots.append(simd.dot_quads(b, step.act_at(1, 0, QK, k, 32), signed))
        pairs.append(b.add(dots[0], dots[1]))  # lanes 0-3: sub-block 2p, 4-7: 2p + 1
    # Two rounds of pairwise sums leave sub-blocks [0 2 4 6 | 1 3 5 7].
    mixed = simd.hadd(b, simd.hadd(b, pairs[0], pairs[1]), simd.hadd(b, pairs[2], pairs[3]))
    return [simd.pick(b, mixed, [0, 4, 1, 5, 2, 6, 3, 7])]


def _decode_sub_block(context, builder, wt, w_, woff_):  # type: ignore[no-untyped-def]
    """IR: the 32 values of the sub-block whose 16 bytes of nibbles start at byte ``woff_``."""
    return iq4_nl.table_values(context, builder, wt, w_, woff_)


def _terms(lanes: simd.BlockLanes, sumi):  # type: ignore[no-untyped-def]
    """IR: ``(d4d8 * (ls - 32)) * sumi`` per sub-block, ``d4d8 = d * dy`` (acts: dy), the scale as
    :func:`_scale` makes it."""
    b = lanes.builder
    k = lanes.sub_block()
    low = b.and_(b.lshr(lanes.u8([4 + s // 2 for s in range(8)]), b.mul(b.and_(k, lanes.splat(simd.I32, 1)),
                                                                       lanes.splat(simd.I32, 4))),
                 lanes.splat(simd.I32, 0xF))
    high = b.and_(b.lshr(lanes.u16(2), b.add(k, k)), lanes.splat(simd.I32, 3))
    ls = b.sub(b.or_(low, b.shl(high, lanes.splat(simd.I32, 4))), lanes.splat(simd.I32, 32))
    d4d8 = b.fmul(lanes.f16(0), lanes.act(0))
    return b.fmul(b.fmul(d4d8, lanes.float(ls)), lanes.float(sumi))


_row_dot = simd.row_sums_intrinsic(simd.WholeSteps(None, BLOCK_BYTES, _terms, sub_blocks=8, step_sums=_block_sums))

_dequantize_sub_block = simd.block32_dequantize_intrinsic(_decode_sub_block)


@inline
def _dequantize_one(blocks: np.ndarray, out: np.ndarray, i: int, stream: bool) -> None:
    """Block ``i`` of uint8 (n_blocks, 136) into ``out[i]`` (float32 (n_blocks, 256))."""
    at = i * BLOCK_BYTES
    d = simd.f16_at(blocks, at)
    for s in range(8):
        _dequantize_sub_block(blocks, at + 8 + 16 * s, out, i * QK + 32 * s, d * F32(_scale(blocks[i], s)), F32(-0.0),
                              stream)


# The block quantizers' scratch arrays: the sub-blocks' scales, one sub-block's levels (given
# importance, also one sub-block's weights).
_SCRATCH = (("scales", "float32", 8), ("scratch", "uint8", 32))


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="IQ4_XS", qtype=GGMLQuantizationType.IQ4_XS, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_K",
                     loops=Loops(quantize_work=64, row_inputs="iq4_xs._row_inputs", scratch=_SCRATCH,
                                 quantize_imatrix="rows", imatrix_scratch=(*_SCRATCH, ("weights", "float32", 32))))
