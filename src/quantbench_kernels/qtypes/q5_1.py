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

import numba
import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import PARALLEL_CHUNKS, START, dispatch, dispatch_dequantize, gemv_rows, inline, jit, pjit
from ..jitmath import F32, write_f16
from ..registry import BlockFormat, DotTerms, Ops, register
from . import q4_1, q8_1

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
    d, lo, q = q4_1.fit_ref(x, NMAX)
    out = np.empty(x.shape[0], dtype=BLOCK_DTYPE)
    out["d"] = refmath.f32_to_f16_bits(d).view(np.float16)
    out["m"] = refmath.f32_to_f16_bits(lo).view(np.float16)
    out["qh"] = (((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    out["qs"] = refmath.pack_nibbles_ref(q)
    return out.view(np.uint8).reshape(-1, BLOCK_BYTES)


def gemv_ref(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
    """uint8 (rows, nb, 24) times Q8_1 activations (nb, 36) -> float32 (rows,), as the generic dot."""
    d, m, q = values_ref(w)
    return q8_1.block_dots_ref(act, q, d, m)


def dot_terms_ref(w: np.ndarray, act: np.ndarray) -> DotTerms:
    """The exact parts of Q5_1 x Q8_1 dot products (:class:`DotTerms`)."""
    d, m, q = values_ref(w)
    return q8_1.block_dot_terms_ref(act, q, d, m)


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


@jit
def _quantize_serial(x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        _quantize_block(x[i], out[i])


@pjit
def _quantize_parallel(x: np.ndarray, out: np.ndarray) -> None:
    for i in numba.prange(x.shape[0]):
        _quantize_block(x[i], out[i])


def quantize(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 24), Numba."""
    out = np.empty((x.shape[0], BLOCK_BYTES), dtype=np.uint8)
    dispatch(_quantize_serial, _quantize_parallel, threads, 8 * x.size, x, out)
    return out


@jit
def _dequantize_blocks(blocks: np.ndarray, out: np.ndarray, start: int, stop: int, stream: bool) -> None:
    for i in range(start, stop):
        _dequantize_one(blocks, out, i, stream)
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
    """uint8 (n_blocks, 24) -> ``out``, float32 (n_blocks, 32), Numba."""
    dispatch_dequantize(_dequantize_serial, _dequantize_parallel, threads, blocks, out)


# IR: the block's 32 quants (see ``simd.row_dot_intrinsic``).
_decode, _ = simd.nibble_decoders(qs_at=8, qh_at=4)


_row_dot = simd.row_dot_intrinsic(_decode, BLOCK_BYTES, "unsigned", q8_1.block_terms)  # quants 0..31

_dequantize_block = simd.block32_dequantize_intrinsic(_decode)


@inline
def _dequantize_one(blocks: np.ndarray, out: np.ndarray, i: int, stream: bool) -> None:
    """Block ``i`` of uint8 (n_blocks, 24) into ``out[i]`` (float32 (n_blocks, 32))."""
    at = i * BLOCK_BYTES
    _dequantize_block(blocks, at, out, i * QK, simd.f16_at(blocks, at), simd.f16_at(blocks, at + 2), stream)


@jit
def _gemv_rows(w: np.ndarray, acts: tuple, q8: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
    gemv_rows(_row_dot, BLOCK_BYTES, w, acts, q8, out, start, stop, two_rows=True)


@jit
def _gemv_serial(w: np.ndarray, act: np.ndarray, out: np.ndarray) -> None:
    dy, sy, q8 = q8_1.unpack(act)
    _gemv_rows(w, (dy, sy), q8, out, START, w.shape[0])


@pjit
def _gemv_parallel(w: np.ndarray, act: np.ndarray, out: np.ndarray) -> None:
    dy, sy, q8 = q8_1.unpack(act)
    acts = (dy, sy)
    rows = w.shape[0]
    chunks = min(rows, PARALLEL_CHUNKS)
    for c in numba.prange(chunks):
        _gemv_rows(w, acts, q8, out, c * rows // chunks, (c + 1) * rows // chunks)


def gemv(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
    """uint8 (rows, nb, 24) times Q8_1 activations uint8 (nb, 36) -> float32 (rows,), Numba."""
    out = np.empty(w.shape[0], dtype=np.float32)
    dispatch(_gemv_serial, _gemv_parallel, threads, w.shape[0] * w.shape[1] * QK, w, act, out)
    return out


FORMAT = register(
    BlockFormat(
        name="Q5_1",
        qtype=GGMLQuantizationType.Q5_1,
        block_dtype=BLOCK_DTYPE,
        reference=Ops(dequantize=dequantize_ref, quantize=quantize_ref, gemv=gemv_ref),
        numba=Ops(dequantize=dequantize, quantize=quantize, gemv=gemv),
        dot_terms=dot_terms_ref,
        activation="Q8_1",
    )
)
