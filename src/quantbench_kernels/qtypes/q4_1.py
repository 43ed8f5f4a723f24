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

import numba
import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import PARALLEL_CHUNKS, START, dispatch, dispatch_dequantize, gemv_rows, inline, jit, pjit
from ..jitmath import F32, write_f16
from ..registry import BlockFormat, DotTerms, Ops, register
from . import q8_0, q8_1

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
    out = np.empty(x.shape[0], dtype=BLOCK_DTYPE)
    out["d"] = refmath.f32_to_f16_bits(d).view(np.float16)
    out["m"] = refmath.f32_to_f16_bits(lo).view(np.float16)
    out["qs"] = refmath.pack_nibbles_ref(np.minimum(NMAX, q))
    return out.view(np.uint8).reshape(-1, BLOCK_BYTES)


def gemv_ref(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
    """uint8 (rows, nb, 20) times Q8_1 activations (nb, 36) -> float32 (rows,), as the generic dot."""
    d, m, q = values_ref(w)
    return q8_1.block_dots_ref(act, q, d, m)


def dot_terms_ref(w: np.ndarray, act: np.ndarray) -> DotTerms:
    """The exact parts of Q4_1 x Q8_1 dot products (:class:`DotTerms`)."""
    d, m, q = values_ref(w)
    return q8_1.block_dot_terms_ref(act, q, d, m)


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


@jit
def _quantize_serial(x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        _quantize_block(x[i], out[i])


@pjit
def _quantize_parallel(x: np.ndarray, out: np.ndarray) -> None:
    for i in numba.prange(x.shape[0]):
        _quantize_block(x[i], out[i])


def quantize(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 20), Numba."""
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
    """uint8 (n_blocks, 20) -> ``out``, float32 (n_blocks, 32), Numba."""
    dispatch_dequantize(_dequantize_serial, _dequantize_parallel, threads, blocks, out)


# IR: the block's 32 quants, and two blocks' at once (see ``simd.row_dot_intrinsic``).
_decode, _decode_pair = simd.nibble_decoders(qs_at=4)


_row_dot = simd.row_dot_intrinsic(_decode, BLOCK_BYTES, "unsigned", q8_1.block_terms,  # quants 0..15
                                  decode_pair=_decode_pair)

_dequantize_block = simd.block32_dequantize_intrinsic(_decode)


@inline
def _dequantize_one(blocks: np.ndarray, out: np.ndarray, i: int, stream: bool) -> None:
    """Block ``i`` of uint8 (n_blocks, 20) into ``out[i]`` (float32 (n_blocks, 32))."""
    at = i * BLOCK_BYTES
    _dequantize_block(blocks, at, out, i * QK, simd.f16_at(blocks, at), simd.f16_at(blocks, at + 2), stream)


@jit
def _gemv_rows(w: np.ndarray, acts: tuple, q8: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
    gemv_rows(_row_dot, BLOCK_BYTES, w, acts, q8, out, start, stop, two_rows=True)


@jit
def _gemv_serial(w: np.ndarray, act: np.ndarray, out: np.ndarray) -> None:
    dy, sy, q8 = q8_1.unpack(act)
    _gemv_rows(w, (dy, sy), q8_0.in_pairs(q8), out, START, w.shape[0])


@pjit
def _gemv_parallel(w: np.ndarray, act: np.ndarray, out: np.ndarray) -> None:
    dy, sy, q8 = q8_1.unpack(act)
    acts = (dy, sy)
    q8 = q8_0.in_pairs(q8)
    rows = w.shape[0]
    chunks = min(rows, PARALLEL_CHUNKS)
    for c in numba.prange(chunks):
        _gemv_rows(w, acts, q8, out, c * rows // chunks, (c + 1) * rows // chunks)


def gemv(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
    """uint8 (rows, nb, 20) times Q8_1 activations uint8 (nb, 36) -> float32 (rows,), Numba."""
    out = np.empty(w.shape[0], dtype=np.float32)
    dispatch(_gemv_serial, _gemv_parallel, threads, w.shape[0] * w.shape[1] * QK, w, act, out)
    return out


FORMAT = register(
    BlockFormat(
        name="Q4_1",
        qtype=GGMLQuantizationType.Q4_1,
        block_dtype=BLOCK_DTYPE,
        reference=Ops(dequantize=dequantize_ref, quantize=quantize_ref, gemv=gemv_ref),
        numba=Ops(dequantize=dequantize, quantize=quantize, gemv=gemv),
        dot_terms=dot_terms_ref,
        activation="Q8_1",
    )
)
