"""Q5_0: 32 weights in 22 bytes (5.5 bits per weight), dot products on Q8_0 activations.

::

    offset  size  field
         0     2  d   f16, scale
         2     4  qh  u32, little-endian: bit j is the fifth (high) bit of weight j's quant
         6    16  qs  low 4 bits: byte j holds weight j in its low nibble and weight j + 16 in
                      its high nibble

    weight = d * (q - 16)

Reference (``*_ref``, NumPy) and Numba kernels follow llama.cpp's ``dequantize_row_q5_0``,
``quantize_row_q5_0_ref`` (``d = max / -16``, max the first value of largest magnitude; ``q =
min(31, (int8_t)(x / d + 16.5))``) and ``ggml_vec_dot_q5_0_q8_0_generic`` (``sumf += (d * dy) *
sumi``).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import Loops, inline
from ..jitmath import F32, write_f16
from ..registry import BlockFormat, Ops
from . import q4_0, q8_0

BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)])
QK = 32
BLOCK_BYTES = 22


def values_ref(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d float32 (...,), each weight's q - 16, int32 (..., 32)) of uint8 (..., 22) blocks."""
    b = blocks.view(BLOCK_DTYPE)[..., 0]
    high = (b["qh"][..., None] >> np.arange(32, dtype=np.uint32)) & 1
    return b["d"].astype(np.float32), (refmath.nibbles_ref(b["qs"]) | (high << 4)).astype(np.int32) - 16


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 22) -> ``out``, float32 (n_blocks, 32)."""
    d, v = values_ref(blocks)
    out[...] = v * d[:, None]


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 22), as ``quantize_row_q5_0_ref``."""
    d, q = refmath.offset_quants_ref(x, 16)
    return refmath.blocks_ref(BLOCK_DTYPE, d=refmath.f16_ref(d), qh=refmath.high_bits_ref(q),
                              qs=refmath.pack_nibbles_ref(q))


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (rows, n_per_row) with importance float32 (n_per_row,) -> uint8 (n_blocks, 22), as
    ``quantize_row_q5_0_impl``: each block fitted by ``make_qx_quants`` weighted by
    :func:`refmath.importance_ref`."""
    d, q = refmath.make_qx_quants(x.reshape(-1, QK), 16, refmath.importance_ref(x, imatrix).reshape(-1, QK))
    return refmath.blocks_ref(BLOCK_DTYPE, d=refmath.f16_ref(d), qh=refmath.high_bits_ref(q),
                              qs=refmath.pack_nibbles_ref(q))


# Dot products on Q8_0 activations, as the generic dot.
gemv_ref, dot_terms_ref = q8_0.dots_ref(values_ref)


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray) -> None:
    d = simd.first_largest32(x, 0) / F32(-16)
    inv = F32(1) / d if d != 0 else F32(0)
    write_f16(blk, 0, d)
    qh = simd.levels32(x, 0, blk, 6, F32(0), inv, F32(16.5), 31)  # MIN(31, (int8_t)(x * id + 16.5f))
    for k in range(4):
        blk[2 + k] = np.uint8((qh >> (8 * k)) & 0xFF)


# IR: the block's 32 quants q, 0..31 (see ``simd.row_dot_intrinsic``).
_quants, _ = simd.nibble_decoders(qs_at=6, qh_at=2)
_decode = simd.less_offset(_quants, 16)  # IR: the block's 32 values q - 16


def _terms(lanes: simd.BlockLanes, sums):  # type: ignore[no-untyped-def]
    """IR: ``(d * dy) * sumi``, with ``sumi`` the dot of the values q - 16: the quants' dot less 16
    times the activation block's quant sum (acts: dy, the quant sums)."""
    b = lanes.builder
    sumi = lanes.less_offset(sums, 16, 1)
    return b.fmul(b.fmul(lanes.f16(0), lanes.act(0)), lanes.float(sumi))


_row_dot = simd.row_dot_intrinsic(_quants, BLOCK_BYTES, "unsigned", _terms)

_dequantize_one = simd.block32_dequantize_intrinsic(_decode, BLOCK_BYTES, simd.f16_header(0))


@inline
def _quantize_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, sigma2: np.float32,
                            weights: np.ndarray, L: np.ndarray) -> None:
    write_f16(blk, 0, q4_0.fit_imatrix(x, qw, sigma2, weights, L, 16))
    pack_levels(L, blk, 2)


@inline
def pack_levels(L: np.ndarray, blk: np.ndarray, qh_at: int) -> None:
    """32 levels 0..31 into the fifth bits (uint32 at ``qh_at``) and the nibbles after them."""
    qh = np.uint32(0)
    for j in range(16):
        qh |= np.uint32((L[j] >> 4) & 1) << np.uint32(j)
        qh |= np.uint32((L[j + 16] >> 4) & 1) << np.uint32(j + 16)
        blk[qh_at + 4 + j] = (L[j] & 0xF) | ((L[j + 16] & 0xF) << 4)
    for k in range(4):
        blk[qh_at + k] = np.uint8((qh >> np.uint32(8 * k)) & np.uint32(0xFF))


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q5_0", qtype=GGMLQuantizationType.Q5_0, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_0",
                     loops=Loops(row_inputs="q8_0.row_inputs_with_sums", quantize_imatrix="rows",
                                 imatrix_scratch=q4_0.IMATRIX_SCRATCH))
