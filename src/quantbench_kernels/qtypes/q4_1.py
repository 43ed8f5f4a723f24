"""Q4_1: 32 weights in 20 bytes (5 bits per weight), a scale and a min, dot products on Q8_1
activations.

::

    offset  size  field
         0     2  d   f16, scale
         2     2  m   f16, min (the block's smallest weight)
         4    16  qs  4-bit quants: byte j holds weight j in its low nibble and weight j + 16
                      in its high nibble

    weight = d * q + m

Reference (``*_ref``, NumPy) and Numba kernels follow llama.cpp's ``dequantize_row_q4_1``,
``quantize_row_q4_1_ref`` (``d = (max - min) / 15``, ``q = min(15, (int8_t)((x - min) / d +
0.5))``) and ``ggml_vec_dot_q4_1_q8_1_generic`` (see :mod:`.q8_1`). Q5_1 shares all but the
fifth bit.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import Loops, inline
from ..jitmath import F32, importance_weights, make_qkx2_quants, pack_nibbles, write_f16
from ..registry import BlockFormat, Ops
from . import q8_1

BLOCK_DTYPE = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)])
QK = 32
BLOCK_BYTES = 20
NMAX = 15


def values_ref(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d, m float32 (...,), each weight's quant, int32 (..., 32)) of uint8 (..., 20) blocks."""
    b = blocks.view(BLOCK_DTYPE)[..., 0]
    return b["d"].astype(np.float32), b["m"].astype(np.float32), refmath.nibbles_ref(b["qs"]).astype(np.int32)


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 20) -> ``out``, float32 (n_blocks, 32)."""
    d, m, q = values_ref(blocks)
    out[...] = q * d[:, None] + m[:, None]


def fit_ref(x: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The quantizer of Q4_1 (``nmax`` 15) and Q5_1 (31): float32 (n_blocks, 32) -> (d, min
    float32 (n,), the low byte of C's ``(int8_t)((x - min) / d + 0.5)``, int32 (n, 32))."""
    lo = refmath.running_min(x)
    hi = refmath.running_max(x, -np.inf)
    d = (hi - lo) / F32(nmax)
    inv = np.where(d != 0, F32(1) / d, F32(0)).astype(np.float32)
    return d, lo, refmath.c_int8((x - lo[:, None]) * inv[:, None] + F32(0.5)) & 0xFF


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 20), as ``quantize_row_q4_1_ref``."""
    d, lo, q = fit_ref(x, NMAX)
    return refmath.blocks_ref(BLOCK_DTYPE, d=refmath.f16_ref(d), m=refmath.f16_ref(lo),
                              qs=refmath.pack_nibbles_ref(np.minimum(NMAX, q)))


def fit_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, nmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The quantizer of Q4_1 (``nmax`` 15) and Q5_1 (31) given importance, as
    ``quantize_row_q4_1_impl``: ``make_qkx3_quants(32, nmax, ..., -0.9f, 0.05f, 36, false)`` per
    block, weighted by :func:`refmath.importance_ref` (for finite values ``make_qkx3_quants`` with
    weights is :func:`refmath.make_qkx2_quants`). float32 (rows, n_per_row) -> (d, min float32
    (n_blocks,), levels uint8 (n_blocks, 32))."""
    weights = refmath.importance_ref(x, imatrix).reshape(-1, QK)
    d, the_min, levels = refmath.make_qkx2_quants(x.reshape(-1, QK), weights, nmax, -0.9, 0.05, 36, use_mad=False)
    return d, -the_min, levels


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (rows, n_per_row) with importance float32 (n_per_row,) -> uint8 (n_blocks, 20), as
    ``quantize_row_q4_1_impl`` (:func:`fit_imatrix_ref`)."""
    d, lo, q = fit_imatrix_ref(x, imatrix, NMAX)
    return refmath.blocks_ref(BLOCK_DTYPE, d=refmath.f16_ref(d), m=refmath.f16_ref(lo), qs=refmath.pack_nibbles_ref(q))


# Dot products on Q8_1 activations, as the generic dot.
gemv_ref, dot_terms_ref = q8_1.dots_ref(values_ref)


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


@inline
def fit(x: np.ndarray, nmax: int) -> tuple[np.float32, np.float32, np.float32]:
    """:func:`fit_ref` of one block: (d, min, 1 / d or 0)."""
    lo = simd.min32(x, 0)
    hi = simd.max32(x, 0)
    d = (hi - lo) / F32(nmax)
    return d, lo, (F32(1) / d if d != 0 else F32(0))


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray) -> None:
    d, lo, inv = fit(x, NMAX)
    write_f16(blk, 0, d)
    write_f16(blk, 2, lo)
    simd.levels32(x, 0, blk, 4, lo, inv, F32(0.5), NMAX)  # MIN(15, (int8_t)((x - min) * id + 0.5f))


@inline
def _quantize_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, sigma2: np.float32,
                            weights: np.ndarray, L: np.ndarray, lanes: np.ndarray) -> None:
    fit_imatrix(x, qw, sigma2, blk, weights, L, lanes, NMAX)
    pack_nibbles(L, blk, 4)


# IR: the block's 32 quants, and two blocks' at once (see ``simd.row_dot_intrinsic``).
_decode, _decode_pair = simd.nibble_decoders(qs_at=4)


_row_dot = simd.row_dot_intrinsic(_decode, BLOCK_BYTES, "unsigned", q8_1.block_terms,  # quants 0..15
                                  decode_pair=_decode_pair)

_dequantize_one = simd.block32_dequantize_intrinsic(_decode, BLOCK_BYTES, simd.f16_header(0, 2))


# The scratch arrays of the block quantizer given importance (Q5_1's too); lanes: make_qkx2_quants's
# 37 steps, 8 a row.
IMATRIX_SCRATCH = (("weights", "float32", 32), ("L", "uint8", 32), ("lanes", "float32", (8, 40)))


@inline
def fit_imatrix(x: np.ndarray, qw: np.ndarray, sigma2: np.float32, blk: np.ndarray, weights: np.ndarray,
                L: np.ndarray, lanes: np.ndarray, nmax: int) -> None:
    """:func:`fit_imatrix_ref` of one block (Q4_1: ``nmax`` 15, Q5_1: 31): d and m into ``blk[0:4]``,
    the levels into ``L``; ``weights`` float32 (32,), ``lanes`` float32 (8, 40) scratch."""
    importance_weights(x, qw, sigma2, weights)
    d, the_min = make_qkx2_quants(x, weights, L, lanes, nmax, F32(-0.9), F32(0.05), 36, False)
    write_f16(blk, 0, d)
    write_f16(blk, 2, -the_min)


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q4_1", qtype=GGMLQuantizationType.Q4_1, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_1",
                     loops=Loops(row_inputs="q8_1.row_inputs_paired", two_rows=True, quantize_imatrix="rows",
                                 imatrix_scratch=IMATRIX_SCRATCH))
