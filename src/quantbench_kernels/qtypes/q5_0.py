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

import numba
import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import PARALLEL_CHUNKS, START, dispatch, dispatch_dequantize, gemv_rows, inline, jit, pjit
from ..jitmath import F32, write_f16
from ..registry import BlockFormat, DotTerms, Ops, register
from . import q8_0

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
    d = refmath.first_largest(x) / F32(-16)
    inv = np.where(d != 0, F32(1) / d, F32(0)).astype(np.float32)
    q = np.minimum(31, refmath.c_int8(x * inv[:, None] + F32(16.5)))
    out = np.empty(x.shape[0], dtype=BLOCK_DTYPE)
    out["d"] = refmath.f32_to_f16_bits(d).view(np.float16)
    out["qh"] = (((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)).sum(axis=1, dtype=np.uint32)
    out["qs"] = refmath.pack_nibbles_ref(q)
    return out.view(np.uint8).reshape(-1, BLOCK_BYTES)


def gemv_ref(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
    """uint8 (rows, nb, 22) times Q8_0 activations (nb, 34) -> float32 (rows,), as the generic dot."""
    d, v = values_ref(w)
    return q8_0.block_dots_ref(act, v, d)


def dot_terms_ref(w: np.ndarray, act: np.ndarray) -> DotTerms:
    """The exact parts of Q5_0 x Q8_0 dot products (:class:`DotTerms`)."""
    d, v = values_ref(w)
    return q8_0.block_dot_terms_ref(act, v, d)


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


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
    """uint8 (n_blocks, 22) -> ``out``, float32 (n_blocks, 32), Numba."""
    dispatch_dequantize(_dequantize_serial, _dequantize_parallel, threads, blocks, out)


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray) -> None:
    d = simd.first_largest32(x, 0) / F32(-16)
    inv = F32(1) / d if d != 0 else F32(0)
    write_f16(blk, 0, d)
    qh = simd.levels32(x, 0, blk, 6, F32(0), inv, F32(16.5), 31)  # MIN(31, (int8_t)(x * id + 16.5f))
    for k in range(4):
        blk[2 + k] = np.uint8((qh >> (8 * k)) & 0xFF)


@jit
def _quantize_serial(x: np.ndarray, out: np.ndarray) -> None:
    for i in range(x.shape[0]):
        _quantize_block(x[i], out[i])


@pjit
def _quantize_parallel(x: np.ndarray, out: np.ndarray) -> None:
    for i in numba.prange(x.shape[0]):
        _quantize_block(x[i], out[i])


def quantize(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 22), Numba."""
    out = np.empty((x.shape[0], BLOCK_BYTES), dtype=np.uint8)
    dispatch(_quantize_serial, _quantize_parallel, threads, 8 * x.size, x, out)
    return out


# IR: the block's 32 quants q, 0..31 (see ``simd.row_dot_intrinsic``).
_quants, _ = simd.nibble_decoders(qs_at=6, qh_at=2)


def _decode(context, builder, wt, w_, woff_):  # type: ignore[no-untyped-def]
    """IR: the block's 32 values q - 16."""
    return builder.sub(_quants(context, builder, wt, w_, woff_), simd.splat_const(simd.I8, 16, 32))


def _terms(lanes: simd.BlockLanes, sums):  # type: ignore[no-untyped-def]
    """IR: ``(d * dy) * sumi``, with ``sumi`` the dot of the values q - 16: the quants' dot less 16
    times the activation block's quant sum (acts: dy, the quant sums)."""
    b = lanes.builder
    sumi = lanes.less_offset(sums, 16, 1)
    return b.fmul(b.fmul(lanes.f16(0), lanes.act(0)), lanes.float(sumi))


_row_dot = simd.row_dot_intrinsic(_quants, BLOCK_BYTES, "unsigned", _terms)

_dequantize_block = simd.block32_dequantize_intrinsic(_decode)


@inline
def _dequantize_one(blocks: np.ndarray, out: np.ndarray, i: int, stream: bool) -> None:
    """Block ``i`` of uint8 (n_blocks, 22) into ``out[i]`` (float32 (n_blocks, 32))."""
    _dequantize_block(blocks, i * BLOCK_BYTES, out, i * QK, simd.f16_at(blocks, i * BLOCK_BYTES), F32(-0.0), stream)


@jit
def _gemv_rows(w: np.ndarray, acts: tuple, q8: np.ndarray, out: np.ndarray, start: int, stop: int) -> None:
    gemv_rows(_row_dot, BLOCK_BYTES, w, acts, q8, out, start, stop, two_rows=False)


@jit
def _gemv_serial(w: np.ndarray, act: np.ndarray, out: np.ndarray) -> None:
    dy, q8 = q8_0.unpack(act)
    _gemv_rows(w, (dy, q8_0.quant_sums(q8)), q8, out, START, w.shape[0])


@pjit
def _gemv_parallel(w: np.ndarray, act: np.ndarray, out: np.ndarray) -> None:
    dy, q8 = q8_0.unpack(act)
    acts = (dy, q8_0.quant_sums(q8))
    rows = w.shape[0]
    chunks = min(rows, PARALLEL_CHUNKS)
    for c in numba.prange(chunks):
        _gemv_rows(w, acts, q8, out, c * rows // chunks, (c + 1) * rows // chunks)


def gemv(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
    """uint8 (rows, nb, 22) times Q8_0 activations uint8 (nb, 34) -> float32 (rows,), Numba."""
    out = np.empty(w.shape[0], dtype=np.float32)
    dispatch(_gemv_serial, _gemv_parallel, threads, w.shape[0] * w.shape[1] * QK, w, act, out)
    return out


FORMAT = register(
    BlockFormat(
        name="Q5_0",
        qtype=GGMLQuantizationType.Q5_0,
        block_dtype=BLOCK_DTYPE,
        reference=Ops(dequantize=dequantize_ref, quantize=quantize_ref, gemv=gemv_ref),
        numba=Ops(dequantize=dequantize, quantize=quantize, gemv=gemv),
        dot_terms=dot_terms_ref,
        activation="Q8_0",
    )
)
