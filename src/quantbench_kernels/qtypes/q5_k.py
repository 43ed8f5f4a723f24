"""Q5_K: 256 weights in 176 bytes (5.5 bits per weight).

Q4_K's layout with a fifth bit per weight: 8 sub-blocks of 32 weights, each with a 6-bit scale
and a 6-bit min (packed as in Q4_K)::

    offset  size  field
         0     2  d       f16, super-block scale of the 6-bit scales
         2     2  dmin    f16, super-block scale of the 6-bit mins
         4    12  scales  8 scales + 8 mins, 6 bits each, packed as in Q4_K
        16    32  qh      fifth bits: bit 2p of byte l is that of weight 64*p + l, bit 2p + 1 that of
                          weight 64*p + 32 + l (p = 0..3, l = 0..31)
        48   128  qs      low 4 bits: byte 32*p + l holds weight 64*p + l in its low nibble and
                          weight 64*p + 32 + l in its high nibble

    weight = d * sc[j] * q - dmin * m[j]      (q = 5-bit quant, 0..31; j = weight index // 32)

Reference (``*_ref``, NumPy) and Numba kernels (same names without ``_ref``) follow llama.cpp's
``dequantize_row_q5_K``, ``quantize_row_q5_K_ref`` and ``ggml_vec_dot_q5_K_q8_K`` (generic
scalar). The scales, the quantizer's search and the block intrinsic are Q4_K's (:mod:`.q4_k`).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from ..compilation import inline
from ..jitmath import F32
from ..registry import BlockFormat, Ops
from . import q4_k, q8_k

BLOCK_DTYPE = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qh", "u1", 32), ("qs", "u1", 128)])
QK = 256


# ----------------------------------------------------------------------------------------------
# Reference (NumPy)
# ----------------------------------------------------------------------------------------------


def unpack_quants_ref(qh: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """The 256 five-bit quants of each block (0..31), in weight order: uint8 (n, 32) and (n, 128)
    -> uint8 (n, 256)."""
    n = qs.shape[0]
    low = qs.reshape(n, 4, 1, 32) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    high = qh.reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)  # bit 2p + nibble
    return ((low & 0xF).reshape(n, 8, 32) | ((high & 1) << 4)).reshape(n, QK)


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 176) -> ``out``, float32 (n_blocks, 256)."""
    with np.errstate(invalid="ignore", over="ignore"):  # inf/NaN scales decode to inf/NaN, as in C
        b = blocks.view(BLOCK_DTYPE)[:, 0]
        sc, m = q4_k.unpack_scales_ref(b["scales"])
        d = b["d"].astype(np.float32)[:, None] * sc
        dmin = b["dmin"].astype(np.float32)[:, None] * m
        q = unpack_quants_ref(b["qh"], b["qs"]).reshape(-1, 8, 32)
        out[...] = (d[..., None] * q - dmin[..., None]).reshape(-1, QK)


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 256) -> uint8 (n_blocks, 176), as ``quantize_row_q5_K_ref``."""
    return _blocks_ref(*q4_k.fit_blocks_ref(x, 31, -0.5, 0.1, 15))


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (rows, n_per_row) with importance float32 (n_per_row,) -> uint8 (n_blocks, 176), as
    ``quantize_row_q5_K_impl`` (``q4_k.fit_blocks_imatrix_ref``)."""
    return _blocks_ref(*q4_k.fit_blocks_imatrix_ref(x, imatrix, 31, clamp=True))


def _blocks_ref(d_bits: np.ndarray, dmin_bits: np.ndarray, packed: np.ndarray, levels: np.ndarray) -> np.ndarray:
    n = levels.shape[0]
    parts = levels.reshape(n, 4, 2, 32)  # (p, nibble, l)
    out = np.empty(n, dtype=BLOCK_DTYPE)
    out["d"] = d_bits.view(np.float16)
    out["dmin"] = dmin_bits.view(np.float16)
    out["scales"] = packed
    out["qs"] = ((parts[:, :, 0] & 0xF) | ((parts[:, :, 1] & 0xF) << 4)).reshape(n, 128)
    fifth = (parts >> 4).reshape(n, 8, 32) << np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
    out["qh"] = np.bitwise_or.reduce(fifth, axis=1)
    return out.view(np.uint8).reshape(n, BLOCK_DTYPE.itemsize)


def dot_parts_ref(w: np.ndarray) -> tuple[np.ndarray, ...]:
    """As ``q4_k.dot_parts_ref`` for uint8 (rows, nb, 176) Q5_K blocks: q, sc, d, m, dmin."""
    rows, nb, _ = w.shape
    b = w.view(BLOCK_DTYPE)[..., 0]
    sc, m = q4_k.unpack_scales_ref(b["scales"])  # (rows, nb, 8)
    q = unpack_quants_ref(b["qh"].reshape(-1, 32), b["qs"].reshape(-1, 128)).reshape(rows, nb, QK)
    return (q.astype(np.int32), np.repeat(sc.astype(np.int32), 32, axis=-1), b["d"].astype(np.float32),
            np.repeat(m.astype(np.int32), 32, axis=-1), b["dmin"].astype(np.float32))


# Dot products on Q8_K activations, as the generic ``ggml_vec_dot_q5_K_q8_K``.
gemv_ref, dot_terms_ref = q8_k.lanes_dots_ref(dot_parts_ref)


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


_dequantize_one = q4_k.dequantize_intrinsic(176, qs_offset=48, qh_offset=16)


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray, L: np.ndarray, lanes: np.ndarray,
                    weights: np.ndarray, scales: np.ndarray, mins: np.ndarray) -> None:
    q4_k.fit_block(x, blk, L, lanes, weights, scales, mins, 31, F32(-0.5), F32(0.1), 15)
    _pack_levels(blk, L)


@inline
def _quantize_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, sigma2: np.float32, L: np.ndarray,
                            lanes: np.ndarray, weights: np.ndarray, scales: np.ndarray, mins: np.ndarray,
                            sw: np.ndarray, Ls: np.ndarray, Lm: np.ndarray) -> None:
    q4_k.fit_imatrix_block(x, qw, blk, L, lanes, weights, scales, mins, sw, Ls, Lm, 31, True)
    _pack_levels(blk, L)


@inline
def _pack_levels(blk: np.ndarray, L: np.ndarray) -> None:
    for l in range(32):
        blk[16 + l] = 0
    for p in range(4):
        for l in range(32):
            a = L[64 * p + l]
            b = L[64 * p + 32 + l]
            blk[48 + 32 * p + l] = (a & 0xF) | ((b & 0xF) << 4)
            blk[16 + l] |= ((a >> 4) << (2 * p)) | ((b >> 4) << (2 * p + 1))


_row_dot = q4_k.row_dot_intrinsic(block_bytes=176, qs_offset=48, qh_offset=16)


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q5_K", qtype=GGMLQuantizationType.Q5_K, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_K",
                     loops=q4_k.FORMAT.loops)
