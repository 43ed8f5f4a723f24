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

import numba
import numpy as np
from gguf import GGMLQuantizationType

from .. import simd
from ..compilation import PARALLEL_CHUNKS, START, dispatch, dispatch_dequantize, gemv_rows, inline, jit, pjit
from ..jitmath import F32, read_f16
from ..registry import BlockFormat, DotTerms, Ops, register
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
    d_bits, dmin_bits, packed, levels = q4_k.fit_blocks_ref(x, 31, -0.5, 0.1, 15)
    n = x.shape[0]
    parts = levels.reshape(n, 4, 2, 32)  # (p, nibble, l)
    out = np.empty(n, dtype=BLOCK_DTYPE)
    out["d"] = d_bits.view(np.float16)
    out["dmin"] = dmin_bits.view(np.float16)
    out["scales"] = packed
    out["qs"] = ((parts[:, :, 0] & 0xF) | ((parts[:, :, 1] & 0xF) << 4)).reshape(n, 128)
    fifth = (parts >> 4).reshape(n, 8, 32) << np.arange(8, dtype=np.uint8).reshape(1, 8, 1)
    out["qh"] = np.bitwise_or.reduce(fifth, axis=1)
    return out.view(np.uint8).reshape(n, BLOCK_DTYPE.itemsize)


def gemv_ref(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Rows of Q5_K blocks times one Q8_K vector, as the generic ``ggml_vec_dot_q5_K_q8_K``: as
    Q4_K, ``sums[l] += d * aux32[l]`` and ``sumf -= dmin * sumi`` per block, then the lanes.

    ``w``: uint8 (rows, nb, 176); ``act``: uint8 (nb, 292) Q8_K blocks. Returns float32 (rows,)."""
    return q8_k.lanes_gemv_ref(act, *dot_parts_ref(w))


def dot_parts_ref(w: np.ndarray) -> tuple[np.ndarray, ...]:
    """As ``q4_k.dot_parts_ref`` for uint8 (rows, nb, 176) Q5_K blocks: q, sc, d, m, dmin."""
    rows, nb, _ = w.shape
    b = w.view(BLOCK_DTYPE)[..., 0]
    sc, m = q4_k.unpack_scales_ref(b["scales"])  # (rows, nb, 8)
    q = unpack_quants_ref(b["qh"].reshape(-1, 32), b["qs"].reshape(-1, 128)).reshape(rows, nb, QK)
    return (q.astype(np.int32), np.repeat(sc.astype(np.int32), 32, axis=-1), b["d"].astype(np.float32),
            np.repeat(m.astype(np.int32), 32, axis=-1), b["dmin"].astype(np.float32))


def dot_terms_ref(w: np.ndarray, act: np.ndarray) -> DotTerms:
    """The exact parts of Q5_K x Q8_K dot products (``DotTerms``)."""
    return q8_k.dot_terms_ref(act, *dot_parts_ref(w))


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


_dequantize_block = q4_k.dequantize_intrinsic(qs_offset=48, qh_offset=16)


@jit
def _dequantize_blocks(blocks: np.ndarray, out: np.ndarray, start: int, stop: int, stream: bool) -> None:
    for i in range(start, stop):
        blk = blocks[i]
        _dequantize_block(blocks, i * 176, out, i * QK, read_f16(blk, 0), read_f16(blk, 2), stream)
    simd.store_fence(stream)


@jit
def _dequantize_serial(blocks: np.ndarray, out: np.ndarray, stream: bool) -> None:
    _dequantize_blocks(blocks, out, START, blocks.shape[0], stream)


@pjit
def _dequantize_parallel(blocks: np.ndarray, out: np.ndarray, stream: bool) -> None:
    n = blocks.shape[0]
    chunks = min(n, PARALLEL_CHUNKS)
    for c in numba.prange(chunks):
        _dequantize_blocks(blocks, out, c * n // chunks, (c + 1) * n // chunks, stream)


def dequantize(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 176) -> ``out``, float32 (n_blocks, 256), Numba."""
    dispatch_dequantize(_dequantize_serial, _dequantize_parallel, threads, blocks, out)


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray, L: np.ndarray, lanes: np.ndarray,
                    weights: np.ndarray, scales: np.ndarray, mins: np.ndarray) -> None:
    q4_k.fit_block(x, blk, L, lanes, weights, scales, mins, 31, F32(-0.5), F32(0.1), 15)
    for l in range(32):
        blk[16 + l] = 0
    for p in range(4):
        for l in range(32):
            a = L[64 * p + l]
            b = L[64 * p + 32 + l]
            blk[48 + 32 * p + l] = (a & 0xF) | ((b & 0xF) << 4)
            blk[16 + l] |= ((a >> 4) << (2 * p)) | ((b >> 4) << (2 * p + 1))


@jit
def _quantize_range(x: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
    L = np.empty(QK, dtype=np.uint8)
    lanes = np.empty((8, 32), dtype=np.float32)  # make_qkx2_quants's steps
    weights = np.empty(32, dtype=np.float32)
    scales = np.empty(8, dtype=np.float32)
    mins = np.empty(8, dtype=np.float32)
    for i in range(start, stop):
        _quantize_block(x[i], out[i], L, lanes, weights, scales, mins)


@jit
def _quantize_serial(x: np.ndarray, out: np.ndarray) -> None:
    _quantize_range(x, out, START, x.shape[0])


@pjit
def _quantize_parallel(x: np.ndarray, out: np.ndarray) -> None:
    n = x.shape[0]
    chunks = min(n, PARALLEL_CHUNKS)
    for c in numba.prange(chunks):
        _quantize_range(x, out, c * n // chunks, (c + 1) * n // chunks)


def quantize(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 256) -> uint8 (n_blocks, 176), Numba."""
    out = np.empty((x.shape[0], BLOCK_DTYPE.itemsize), dtype=np.uint8)
    dispatch(_quantize_serial, _quantize_parallel, threads, 64 * x.size, x, out)
    return out


_row_dot = q4_k.row_dot_intrinsic(block_bytes=176, qs_offset=48, qh_offset=16)


@jit
def _gemv_rows(w: np.ndarray, acts: tuple, q8: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
    """Rows ``start:stop`` of ``w`` (uint8 (rows, nb, 176), C-contiguous) times the unpacked Q8_K
    vector, into ``out``: ``ggml_vec_dot_q5_K_q8_K``, per row."""
    gemv_rows(_row_dot, 176, w, acts, q8, out, start, stop, two_rows=False)


@jit
def _gemv_serial(w: np.ndarray, act: np.ndarray, out: np.ndarray) -> None:
    yd, q8, _, bsums = q8_k.unpack_for_lanes(act, 0)
    _gemv_rows(w, (yd, bsums), q8, out, START, w.shape[0])


@pjit
def _gemv_parallel(w: np.ndarray, act: np.ndarray, out: np.ndarray) -> None:
    # Each chunk calls the serial row kernel, compiled on its own.
    yd, q8, _, bsums = q8_k.unpack_for_lanes(act, 0)
    acts = (yd, bsums)
    rows = w.shape[0]
    chunks = min(rows, PARALLEL_CHUNKS)
    for c in numba.prange(chunks):
        _gemv_rows(w, acts, q8, out, c * rows // chunks, (c + 1) * rows // chunks)


def gemv(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
    """uint8 (rows, nb, 176) times Q8_K blocks uint8 (nb, 292) -> float32 (rows,), Numba."""
    out = np.empty(w.shape[0], dtype=np.float32)
    dispatch(_gemv_serial, _gemv_parallel, threads, w.shape[0] * w.shape[1] * QK, w, act, out)
    return out


FORMAT = register(
    BlockFormat(
        name="Q5_K",
        qtype=GGMLQuantizationType.Q5_K,
        block_dtype=BLOCK_DTYPE,
        reference=Ops(dequantize=dequantize_ref, quantize=quantize_ref, gemv=gemv_ref),
        numba=Ops(dequantize=dequantize, quantize=quantize, gemv=gemv),
        dot_terms=dot_terms_ref,
        activation="Q8_K",
    )
)
