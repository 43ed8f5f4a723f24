"""Q6_K: 256 weights in 210 bytes (6.5625 bits per weight).

One super-block of 16 sub-blocks of 16 weights, each with a signed 8-bit scale; no mins::

    offset  size  field
         0   128  ql      low 4 bits of the quants: byte 64*h + 32*c + l holds, in its low nibble,
                          weight 128*h + 32*c + l and, in its high nibble, weight 128*h + 32*c + 64 + l
                          (h = 0..1, c = 0..1, l = 0..31)
       128    64  qh      high 2 bits: byte 32*h + l holds, in bits 2k..2k+1, those of weight
                          128*h + 32*k + l (k = 0..3)
       192    16  scales  int8, the scale of sub-block j (weights 16j..16j+15)
       208     2  d       f16, super-block scale of the scales

    weight = d * scales[j] * (q - 32)      (q = 6-bit quant, 0..63; j = weight index // 16)

Reference (``*_ref``, NumPy) and Numba kernels (same names without ``_ref``) follow llama.cpp's
``dequantize_row_q6_K``, ``quantize_row_q6_K_ref`` (``make_qx_quants`` per sub-block) and
``ggml_vec_dot_q6_K_q8_K`` (generic scalar).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import Loops, inline, jit
from ..jitmath import F32, GROUP_MAX_EPS, make_qx_quants, make_qx_quants_weighted, nearest_int, read_f16, write_f16
from ..refmath import f16_to_f32, f32_to_f16_bits
from ..registry import BlockFormat, Ops
from . import q8_k

BLOCK_DTYPE = np.dtype([("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<f2")])
QK = 256


# ----------------------------------------------------------------------------------------------
# Reference (NumPy)
# ----------------------------------------------------------------------------------------------


def unpack_quants_ref(ql: np.ndarray, qh: np.ndarray) -> np.ndarray:
    """The 256 six-bit quants of each block (0..63), in weight order: uint8 (n, 128) and (n, 64)
    -> uint8 (n, 256)."""
    n = ql.shape[0]
    low = ql.reshape(n, 2, 1, 64) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)  # (n, h, nibble, 64)
    low = (low & 0xF).reshape(n, 2, 4, 32)  # weight 128h + 32k + l: k = 2 * nibble + c
    high = qh.reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    return (low | ((high & 3) << 4)).reshape(n, QK)


def pack_quants_ref(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`unpack_quants_ref` for quants 0..63: uint8 (n, 256) -> (ql, qh)."""
    n = q.shape[0]
    parts = q.reshape(n, 2, 4, 32)
    low = parts & 0xF
    ql = (low[:, :, 0:2] | (low[:, :, 2:4] << 4)).reshape(n, 128)
    high = parts >> 4
    qh = (high[:, :, 0] | (high[:, :, 1] << 2) | (high[:, :, 2] << 4) | (high[:, :, 3] << 6)).reshape(n, 64)
    return ql.astype(np.uint8), qh.astype(np.uint8)


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 210) -> ``out``, float32 (n_blocks, 256)."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN scales decode to inf/NaN, as in C
        b = blocks.view(BLOCK_DTYPE)[:, 0]
        d = b["d"].astype(np.float32)[:, None] * b["scales"].astype(np.float32)  # (n, 16)
        q = unpack_quants_ref(b["ql"], b["qh"]).astype(np.float32) - F32(32)
        out[...] = (d[..., None] * q.reshape(-1, 16, 16)).reshape(-1, QK)


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 256) -> uint8 (n_blocks, 210), as ``quantize_row_q6_K_ref``."""
    return _quantize_ref(x.reshape(-1, QK), None)


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (rows, n_per_row) with importance float32 (n_per_row,) -> uint8 (n_blocks, 210), as
    ``quantize_row_q6_K_impl``: each group of 16 fitted by ``make_qx_quants`` weighted by the
    importance itself (llama.cpp leaves its ``sigma2`` weighting commented out), the rest as
    :func:`quantize_ref`."""
    rows = x.shape[0]
    return _quantize_ref(x.reshape(-1, QK), np.tile(imatrix.reshape(-1, QK), (rows, 1)))


def _quantize_ref(x: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    n = x.shape[0]
    xs = x.reshape(n, 16, 16)
    scales, levels = refmath.groups_ref(refmath.make_qx_quants, xs, 32, weights=weights)
    max_scale = refmath.first_largest(scales)
    empty = np.abs(max_scale) < refmath.GROUP_MAX_EPS
    with np.errstate(all="ignore"):
        iscale = F32(-128) / max_scale
        d_bits = f32_to_f16_bits(F32(1) / iscale)
        # C stores MIN(127, nearest_int(...)) in an int8_t.
        sc = np.minimum(refmath.nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
        d_sub = f16_to_f32(d_bits)[:, None] * sc.astype(np.float32)
        q = np.clip(refmath.nearest_int(xs / d_sub[..., None]), -32, 31) + 32
        levels = np.where((d_sub != 0)[..., None], q, levels).astype(np.uint8)
    out = np.zeros(n, dtype=BLOCK_DTYPE)
    ql, qh = pack_quants_ref(levels.reshape(n, QK))
    out["ql"] = ql
    out["qh"] = qh
    out["scales"] = sc
    out["d"] = d_bits.view(np.float16)
    out[empty] = np.zeros(1, dtype=BLOCK_DTYPE)  # an all-zero super-block is all zero bytes
    return out.view(np.uint8).reshape(n, BLOCK_DTYPE.itemsize)


def dot_parts_ref(w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each weight's quant (minus 32) and scale (int32 (rows, nb, 256)) and each block's d
    (float32 (rows, nb)) of uint8 (rows, nb, 210) Q6_K blocks."""
    rows, nb, _ = w.shape
    b = w.view(BLOCK_DTYPE)[..., 0]
    q = unpack_quants_ref(b["ql"].reshape(-1, 128), b["qh"].reshape(-1, 64)).astype(np.int32) - 32
    scales = np.repeat(b["scales"].astype(np.int32), 16, axis=-1)
    return q.reshape(rows, nb, QK), scales, b["d"].astype(np.float32)


# Dot products on Q8_K activations, as the generic ``ggml_vec_dot_q6_K_q8_K``.
gemv_ref, dot_terms_ref = q8_k.lanes_dots_ref(dot_parts_ref, offset=32)  # the quants are stored plus 32


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


@jit
def _row_inputs(act: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Q8_K activations for values that are quants less 32 (``q8_k.row_inputs_with_pair_sums``)."""
    return q8_k.row_inputs_with_pair_sums(act, 32)


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray, L: np.ndarray, scales: np.ndarray) -> None:
    _fit_block(x, x, False, blk, L, scales)


@inline
def _quantize_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, sigma2: np.float32, L: np.ndarray,
                            scales: np.ndarray) -> None:
    _fit_block(x, qw, True, blk, L, scales)  # Q6_K weighs by the importance alone: no sigma2


@inline
def _fit_block(x: np.ndarray, qw: np.ndarray, weighted: bool, blk: np.ndarray, L: np.ndarray,
               scales: np.ndarray) -> None:
    max_scale = F32(0)
    max_abs = F32(0)
    for j in range(16):
        if weighted:
            sc = make_qx_quants_weighted(x[16 * j:16 * j + 16], 32, L[16 * j:16 * j + 16], qw[16 * j:16 * j + 16])
        else:
            sc = make_qx_quants(x[16 * j:16 * j + 16], 32, L[16 * j:16 * j + 16])
        scales[j] = sc
        if abs(sc) > max_abs:
            max_abs = abs(sc)
            max_scale = sc
    for k in range(blk.shape[0]):
        blk[k] = 0
    if max_abs < GROUP_MAX_EPS:
        return
    iscale = F32(-128) / max_scale
    write_f16(blk, 208, F32(1) / iscale)
    for j in range(16):
        blk[192 + j] = np.uint8(np.int8(min(127, nearest_int(iscale * scales[j]))))
    d_all = read_f16(blk, 208)
    for j in range(16):
        d = d_all * F32(np.int8(blk[192 + j]))
        if d == 0:
            continue
        for i in range(16):
            L[16 * j + i] = max(-32, min(31, nearest_int(x[16 * j + i] / d))) + 32
    for h in range(2):
        for l in range(32):
            o = 128 * h + l
            blk[64 * h + l] = (L[o] & 0xF) | ((L[o + 64] & 0xF) << 4)
            blk[64 * h + 32 + l] = (L[o + 32] & 0xF) | ((L[o + 96] & 0xF) << 4)
            blk[128 + 32 * h + l] = (L[o] >> 4) | ((L[o + 32] >> 4) << 2) | ((L[o + 64] >> 4) << 4) | (
                (L[o + 96] >> 4) << 6)


# The sub-blocks (scales) of the two halves of each 32-weight chunk.
_SUB_BLOCK_OF_CHUNK = [(2 * t, 2 * t + 1) for t in range(8)]


def _decode(context, builder, wt, w_, woff_, lane_order: bool):  # type: ignore[no-untyped-def]
    """IR: one block's 8 chunks of 32 quants (0..63, the true quant is 32 less; weight order, or
    ``simd.lanes_dot``'s) and its 16 int8 scales, from the block at byte ``woff_`` of the uint8
    array ``w_``."""
    scales = simd.load_bytes(context, builder, wt, w_, simd.offset(builder, woff_, 192), 16)
    chunks = []
    for h in range(2):
        qh = simd.load_bytes(context, builder, wt, w_, simd.offset(builder, woff_, 128 + 32 * h), lane_order=lane_order)
        ql = [simd.load_bytes(context, builder, wt, w_, simd.offset(builder, woff_, 64 * h + 32 * c),
                              lane_order=lane_order) for c in range(2)]
        for k in range(4):  # chunk t = 4h + k: a nibble of ql[64h + 32(k % 2) + l], 2 bits of qh
            high = simd.bits8(builder, qh, 2 * k, 3, to=4)
            chunks.append(builder.or_(simd.bits8(builder, ql[k % 2], 4 * (k // 2), 0xF), high))
    return chunks, scales


# ``ggml_vec_dot_q6_K_q8_K``, a row at a time, and the dequantize of a block.
_row_dot, _dequantize_one = simd.offset_lanes_kernels(_decode, 210, 208, 32, _SUB_BLOCK_OF_CHUNK)


# The block quantizers' scratch arrays (with and without importance): the levels, the scales.
_SCRATCH = (("L", "uint8", QK), ("scales", "float32", 16))


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q6_K", qtype=GGMLQuantizationType.Q6_K, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_K",
                     loops=Loops(quantize_work=64, row_inputs="q6_k._row_inputs", two_rows=True, scratch=_SCRATCH,
                                 quantize_imatrix="rows", imatrix_scratch=_SCRATCH))
