"""Q8_1: 32 values in 36 bytes, the activation format of the dot products of Q4_1 and Q5_1.

::

    offset  size  field
         0     2  d   f16, scale
         2     2  s   f16, d times the sum of the 32 quants (what the weights' min multiplies)
         4    32  qs  int8 quants: value j = d * qs[j]

(gguf-py's table still gives Q8_1 its old 40-byte layout with f32 d and s; llama.cpp's is this
one, and no GGUF file holds Q8_1.) The reference quantizer is ``quantize_row_q8_1_ref`` (``qs =
roundf(x / d)``, ``d = amax / 127``); activations are quantized as the x86 CPU backend's
``quantize_row_q8_1`` does (the quants of :mod:`.q8_0`'s activations, then ``s = d * sum``).

This module also holds the float steps of the generic scalar dots of the formats that take Q8_1
activations: ``sumf += (d * dy) * sumi + m * s`` block after block.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import Loops, activation_blocks, inline, jit
from ..jitmath import F32, read_f16, write_f16
from ..registry import BlockFormat, DotTerms, Ops
from . import q8_0

BLOCK_DTYPE = np.dtype([("d", "<f2"), ("s", "<f2"), ("qs", "i1", 32)])
QK = 32
BLOCK_BYTES = 36


# ----------------------------------------------------------------------------------------------
# Reference (NumPy)
# ----------------------------------------------------------------------------------------------


def fields_ref(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d float32 (...,), s float32 (...,), qs int8 (..., 32)) of uint8 (..., 36) Q8_1 blocks."""
    b = blocks.view(BLOCK_DTYPE)[..., 0]
    return b["d"].astype(np.float32), b["s"].astype(np.float32), b["qs"]


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 36) -> ``out``, float32 (n_blocks, 32): d * qs (``s`` is not a value)."""
    d, _, qs = fields_ref(blocks)
    out[...] = d[:, None] * qs


def _pack_ref(d: np.ndarray, q: np.ndarray, total: np.ndarray) -> np.ndarray:
    out = np.empty(d.shape[0], dtype=BLOCK_DTYPE)
    out["d"] = refmath.f32_to_f16_bits(d).view(np.float16)
    out["s"] = refmath.f32_to_f16_bits(total.astype(np.float32) * d).view(np.float16)
    out["qs"] = q
    return out.view(np.uint8).reshape(-1, BLOCK_BYTES)


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 36), as ``quantize_row_q8_1_ref`` (Q8_0's
    reference quants; ``s`` from the stored int8 quants)."""
    d, q = q8_0.reference_quants_ref(x)
    return _pack_ref(d, q, q.astype(np.int32).sum(axis=1))


def quantize_activation_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 36), as the x86 CPU backend's ``quantize_row_q8_1``."""
    return _pack_ref(*q8_0.activation_quants_ref(x))


def block_dots_ref(act: np.ndarray, values: np.ndarray, dx: np.ndarray, mx: np.ndarray) -> np.ndarray:
    """The generic scalar dot of llama.cpp for a format with mins on Q8_1 activations, per row:
    ``sumf += (dx * dy) * sumi + mx * s`` block by block, ``sumi`` the exact sum of value * q8.

    ``values``: int (rows, nb, 32), each weight's quant; ``dx``, ``mx``: float32 (rows, nb),
    each block's scale and min; ``act``: uint8 (nb, 36). Returns float32 (rows,)."""
    dy, s, q8 = fields_ref(act)
    sumi = (values.astype(np.int64) * q8.astype(np.int64)).sum(axis=-1).astype(np.float32)
    sumf = np.zeros(values.shape[0], dtype=np.float32)
    for b in range(values.shape[1]):
        sumf = sumf + ((dx[:, b] * dy[b]) * sumi[:, b] + mx[:, b] * s[b])
    return sumf


def block_dot_terms_ref(act: np.ndarray, values: np.ndarray, dx: np.ndarray, mx: np.ndarray) -> DotTerms:
    """The exact parts of those dot products (:class:`DotTerms`): per block, ``dx * dy`` times the
    sum of value * q8, and ``mx * s`` (times one)."""
    dy, s, q8 = fields_ref(act)
    prod = values.astype(np.int64) * q8.astype(np.int64)
    ones = np.ones(dx.shape, dtype=np.int64)
    return DotTerms(
        coef=np.concatenate([dx.astype(np.float64) * dy.astype(np.float64), mx.astype(np.float64) * s], axis=-1),
        ints=np.concatenate([prod.sum(axis=-1), ones], axis=-1),
        abs_ints=np.concatenate([np.abs(prod).sum(axis=-1), ones], axis=-1),
    )


def dots_ref(values_ref: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
             ) -> tuple[Callable[..., np.ndarray], Callable[..., DotTerms]]:
    """(gemv_ref, dot_terms_ref) of a 32-weight format with mins on Q8_1 activations whose
    ``values_ref(w)`` gives (d, m float32 (rows, nb), quants int (rows, nb, 32)):
    :func:`block_dots_ref` and :func:`block_dot_terms_ref` of them."""

    def gemv_ref(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
        d, m, q = values_ref(w)
        return block_dots_ref(act, q, d, m)

    def dot_terms_ref(w: np.ndarray, act: np.ndarray) -> DotTerms:
        d, m, q = values_ref(w)
        return block_dot_terms_ref(act, q, d, m)

    return gemv_ref, dot_terms_ref


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


@jit
def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the dot kernels read from uint8 (nb, 36) Q8_1 activations, or float32 values that
    :data:`blocks` quantizes first, decoded once: (d float32 (nb,), s float32 (nb,), quants int8
    (nb, 32))."""
    act = blocks(x)
    nb = act.shape[0]
    d = np.empty(nb, dtype=np.float32)
    s = np.empty(nb, dtype=np.float32)
    q = np.empty((nb, QK), dtype=np.int8)
    for b in range(nb):
        d[b] = simd.f16_at(act, b * BLOCK_BYTES)
        s[b] = simd.f16_at(act, b * BLOCK_BYTES + 2)
        q8_0.copy_quants(act, b * BLOCK_BYTES + 4, q, b * QK)
    return d, s, q


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray) -> None:
    d, total = q8_0.reference_quantize_block(x, blk, 4)
    write_f16(blk, 2, F32(total) * d)


@inline
def _quantize_activation_block(x: np.ndarray, blk: np.ndarray) -> None:
    d, total = q8_0.quantize_activation_block(x, blk, 4)
    write_f16(blk, 2, d * F32(total))


blocks = activation_blocks(_quantize_activation_block, QK, BLOCK_BYTES)


# What the row dots of the formats with Q8_1 activations read (``Loops.row_inputs``): (acts: dy and
# s, quants), the quants in weight order or in pairs (see ``q8_0.in_pairs``).


@jit
def row_inputs(act: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    dy, sy, q8 = unpack(act)
    return (dy, sy), q8


@jit
def row_inputs_paired(act: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    dy, sy, q8 = unpack(act)
    return (dy, sy), q8_0.in_pairs(q8)


@inline
def _dequantize_one(blocks: np.ndarray, out: np.ndarray, i: int, stream: bool) -> None:
    """Block ``i`` of uint8 (n_blocks, 36) into ``out[i]`` (float32 (n_blocks, 32)); plain stores."""
    d = read_f16(blocks[i], 0)
    for j in range(QK):
        out[i, j] = d * F32(np.int8(blocks[i, 4 + j]))


def block_terms(lanes: simd.BlockLanes, sumi):  # type: ignore[no-untyped-def]
    """IR for ``simd.row_dot_intrinsic``: ``(d * dy) * sumi + m * s`` of a format with its f16
    ``d`` at byte 0 and ``m`` at byte 2 of each block (acts: dy, s; see :func:`unpack`)."""
    b = lanes.builder
    d, m = lanes.f16_pair(0)
    return b.fadd(b.fmul(b.fmul(d, lanes.act(0)), lanes.float(sumi)), b.fmul(m, lanes.act(1)))


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q8_1", qtype=GGMLQuantizationType.Q8_1, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize=dequantize_ref, quantize=quantize_ref,
                                   quantize_activation=quantize_activation_ref),
                     loops=Loops(quantize_activation=True))
