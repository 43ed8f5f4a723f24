"""Q4_0: 32 weights in 18 bytes (4.5 bits per weight), dot products on Q8_0 activations.

::

    offset  size  field
         0     2  d   f16, scale
         2    16  qs  4-bit quants: byte j holds weight j in its low nibble and weight j + 16
                      in its high nibble

    weight = d * (q - 8)

Reference (``*_ref``, NumPy) and Numba kernels follow llama.cpp's ``dequantize_row_q4_0``,
``quantize_row_q4_0_ref`` (``d = max / -8``, max the first value of largest magnitude; ``q =
min(15, (int8_t)(x / d + 8.5))``) and ``ggml_vec_dot_q4_0_q8_0_generic``, which (alone of the
Q8_0 family) multiplies ``(sumi * d) * dy``.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import Loops, inline
from ..jitmath import F32, importance_weights, make_qx_quants_weighted, pack_nibbles, write_f16
from ..registry import BlockFormat, Ops
from . import q8_0

BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
QK = 32
BLOCK_BYTES = 18


def values_ref(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d float32 (...,), each weight's q - 8, int32 (..., 32)) of uint8 (..., 18) blocks."""
    b = blocks.view(BLOCK_DTYPE)[..., 0]
    return b["d"].astype(np.float32), refmath.nibbles_ref(b["qs"]).astype(np.int32) - 8


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 18) -> ``out``, float32 (n_blocks, 32)."""
    d, v = values_ref(blocks)
    out[...] = v * d[:, None]


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 18), as ``quantize_row_q4_0_ref``."""
    d, q = refmath.offset_quants_ref(x, 8)
    return refmath.blocks_ref(BLOCK_DTYPE, d=refmath.f16_ref(d), qs=refmath.pack_nibbles_ref(q))


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (rows, n_per_row) with importance float32 (n_per_row,) -> uint8 (n_blocks, 18), as
    ``quantize_row_q4_0_impl``: each block fitted by ``make_qx_quants`` weighted by
    :func:`refmath.importance_ref`."""
    d, q = refmath.make_qx_quants(x.reshape(-1, QK), 8, refmath.importance_ref(x, imatrix).reshape(-1, QK))
    return refmath.blocks_ref(BLOCK_DTYPE, d=refmath.f16_ref(d), qs=refmath.pack_nibbles_ref(q))


# Dot products on Q8_0 activations, as the generic dot, which (alone of the Q8_0 family)
# multiplies ``(sumi * d) * dy``.
gemv_ref, dot_terms_ref = q8_0.dots_ref(values_ref, sumi_first=True)


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray) -> None:
    d = simd.first_largest32(x, 0) / F32(-8)
    inv = F32(1) / d if d != 0 else F32(0)
    write_f16(blk, 0, d)
    simd.levels32(x, 0, blk, 2, F32(0), inv, F32(8.5), 15)  # MIN(15, (int8_t)(x * id + 8.5f))


@inline
def _quantize_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, sigma2: np.float32,
                            weights: np.ndarray, L: np.ndarray) -> None:
    write_f16(blk, 0, fit_imatrix(x, qw, sigma2, weights, L, 8))
    pack_nibbles(L, blk, 2)


# IR: the block's 32 quants q, 0..15, and two blocks' at once (see ``simd.row_dot_intrinsic``).
_quants, _quant_pairs = simd.nibble_decoders(qs_at=2)
_decode = simd.less_offset(_quants, 8)  # IR: the block's 32 values q - 8


def _terms(lanes: simd.BlockLanes, sums):  # type: ignore[no-untyped-def]
    """IR: ``(sumi * d) * dy``, with ``sumi`` the dot of the values q - 8: the quants' dot less 8
    times the activation block's quant sum (acts: dy, the quant sums)."""
    b = lanes.builder
    sumi = lanes.less_offset(sums, 8, 1)
    return b.fmul(b.fmul(lanes.float(sumi), lanes.f16(0)), lanes.act(0))


_row_dot = simd.row_dot_intrinsic(_quants, BLOCK_BYTES, "unsigned", _terms, decode_pair=_quant_pairs)

_dequantize_one = simd.block32_dequantize_intrinsic(_decode, BLOCK_BYTES, simd.f16_header(0))


# The scratch arrays of the block quantizer given importance (Q5_0's too).
IMATRIX_SCRATCH = (("weights", "float32", 32), ("L", "uint8", 32))


@inline
def fit_imatrix(x: np.ndarray, qw: np.ndarray, sigma2: np.float32, weights: np.ndarray, L: np.ndarray,
                nmax: int) -> np.float32:
    """:func:`quantize_imatrix_ref`'s fit of one block (Q4_0: ``nmax`` 8, Q5_0: 16): the levels
    (0..2 nmax - 1) into ``L``, the scale returned; ``weights``: float32 (32,) scratch."""
    importance_weights(x, qw, sigma2, weights)
    return make_qx_quants_weighted(x, nmax, L, weights)


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q4_0", qtype=GGMLQuantizationType.Q4_0, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_0",
                     loops=Loops(row_inputs="q8_0.row_inputs_with_sums_paired", two_rows=True, quantize_imatrix="rows",
                                 imatrix_scratch=IMATRIX_SCRATCH))
