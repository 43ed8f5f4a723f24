"""Q5_1: 32 weights in 24 bytes (6 bits per weight), a scale and a min, dot products on Q8_1
activations.

::

    offset  size  field
         0     2  d   f16, scale
         2     2  m   f16, min (the block's smallest weight)
         4     4  qh  u32, little-endian: bit j is the fifth (high) bit of weight j's quant
         8    16  qs  low 4 bits: byte j holds weight j in its low nibble and weight j + 16 in
                      its high nibble

    weight = d * q + m

Reference (``*_ref``, NumPy) and Numba kernels follow llama.cpp's ``dequantize_row_q5_1``,
``quantize_row_q5_1_ref`` (``d = (max - min) / 31``, ``q = (uint8_t)((x - min) / d + 0.5)``,
unclamped: only its low 5 bits are stored) and ``ggml_vec_dot_q5_1_q8_1_generic`` (see
:mod:`.q8_1`). The fit is Q4_1's.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import Loops, inline
from ..jitmath import F32, write_f16
from ..registry import BlockFormat, Ops
from . import q4_1, q5_0, q8_1

BLOCK_DTYPE = np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)])
QK = 32
BLOCK_BYTES = 24
NMAX = 31


def values_ref(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d, m float32 (...,), each weight's quant, int32 (..., 32)) of uint8 (..., 24) blocks."""
    b = blocks.view(BLOCK_DTYPE)[..., 0]
    high = (b["qh"][..., None] >> np.arange(32, dtype=np.uint32)) & 1
    q = (refmath.nibbles_ref(b["qs"]) | (high << 4)).astype(np.int32)
    return b["d"].astype(np.float32), b["m"].astype(np.float32), q


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 24) -> ``out``, float32 (n_blocks, 32)."""
    d, m, q = values_ref(blocks)
    out[...] = q * d[:, None] + m[:, None]


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 24), as ``quantize_row_q5_1_ref``."""
    return _blocks_ref(*q4_1.fit_ref(x, NMAX))


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (rows, n_per_row) with importance float32 (n_per_row,) -> uint8 (n_blocks, 24), as
    ``quantize_row_q5_1_impl`` (``q4_1.fit_imatrix_ref``)."""
    return _blocks_ref(*q4_1.fit_imatrix_ref(x, imatrix, NMAX))


def _blocks_ref(d: np.ndarray, lo: np.ndarray, q: np.ndarray) -> np.ndarray:
    return refmath.blocks_ref(BLOCK_DTYPE, d=refmath.f16_ref(d), m=refmath.f16_ref(lo), qh=refmath.high_bits_ref(q),
                              qs=refmath.pack_nibbles_ref(q))


# Dot products on Q8_1 activations, as the generic dot.
gemv_ref, dot_terms_ref = q8_1.dots_ref(values_ref)


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray) -> None:
    d, lo, inv = q4_1.fit(x, NMAX)
    write_f16(blk, 0, d)
    write_f16(blk, 2, lo)
    qh = simd.levels32(x, 0, blk, 8, lo, inv, F32(0.5), 255)  # (uint8_t)((x - min) * id + 0.5f): no MIN
    for k in range(4):
        blk[4 + k] = np.uint8((qh >> (8 * k)) & 0xFF)


# IR: the block's 32 quants (see ``simd.row_dot_intrinsic``).
_decode, _ = simd.nibble_decoders(qs_at=8, qh_at=4)


_row_dot = simd.row_dot_intrinsic(_decode, BLOCK_BYTES, "unsigned", q8_1.block_terms)  # quants 0..31

_dequantize_one = simd.block32_dequantize_intrinsic(_decode, BLOCK_BYTES, simd.f16_header(0, 2))


@inline
def _quantize_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, sigma2: np.float32,
                            weights: np.ndarray, L: np.ndarray, lanes: np.ndarray) -> None:
    q4_1.fit_imatrix(x, qw, sigma2, blk, weights, L, lanes, NMAX)
    q5_0.pack_levels(L, blk, 4)


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q5_1", qtype=GGMLQuantizationType.Q5_1, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_1",
                     loops=Loops(row_inputs="q8_1.row_inputs", two_rows=True, quantize_imatrix="rows",
                                 imatrix_scratch=q4_1.IMATRIX_SCRATCH))
