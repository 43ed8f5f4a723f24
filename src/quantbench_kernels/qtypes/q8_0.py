"""Q8_0: 32 weights in 34 bytes (8.5 bits per weight); also the activation format of the dot
products of Q4_0, Q5_0, Q8_0, IQ4_NL and MXFP4.

::

    offset  size  field
         0     2  d   f16, scale
         2    32  qs  int8 quants: weight j = d * qs[j]

Weights, as ``quantize_row_q8_0_ref``: ``d = amax / 127`` (amax: the block's largest magnitude),
``qs = roundf(x * (1 / d))`` (half away from zero). Activations, as the x86 CPU backend's
``quantize_row_q8_0`` (AVX2): the same ``d``, but ``qs = x * (127 / amax)`` rounded half to even;
where ``127 / amax`` overflows (amax below about 3.7e-37) every quant is -128, as the conversion
of inf and NaN to int32 and the saturating packs give.

This module also holds what the formats that take Q8_0 activations share: the activations
unpacked once per dot product, and the float steps of their generic scalar dots.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import (
    Loops,
    activation_blocks,
    inline,
    jit,
)
from ..jitmath import F32, c_int8, nearest_int, roundf, write_f16
from ..registry import BlockFormat, DotTerms, Ops

BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "i1", 32)])
QK = 32
BLOCK_BYTES = 34


# ----------------------------------------------------------------------------------------------
# Reference (NumPy)
# ----------------------------------------------------------------------------------------------


def fields_ref(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d float32 (..., ), qs int8 (..., 32)) of uint8 (..., 34) Q8_0 blocks."""
    b = blocks.view(BLOCK_DTYPE)[..., 0]
    return b["d"].astype(np.float32), b["qs"]


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 34) -> ``out``, float32 (n_blocks, 32)."""
    d, qs = fields_ref(blocks)
    out[...] = d[:, None] * qs


def pack_ref(d: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Q8_0 blocks from float32 scales (n,) (rounded to f16 here) and int8 quants (n, 32)."""
    out = np.empty(d.shape[0], dtype=BLOCK_DTYPE)
    out["d"] = refmath.f32_to_f16_bits(d).view(np.float16)
    out["qs"] = q
    return out.view(np.uint8).reshape(-1, BLOCK_BYTES)


def reference_quants_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What ``quantize_row_q8_0_ref`` and ``quantize_row_q8_1_ref`` compute of float32 (n_blocks,
    32): d = amax / 127 (float32, before its f16 rounding) and the int8 quants roundf(x / d) (where
    1 / d overflows, C's int8 conversion of inf: 0)."""
    d = np.abs(x).max(axis=1) / F32(127)
    inv = np.where(d != 0, F32(1) / d, F32(0)).astype(np.float32)
    return d, refmath.c_int8(refmath.roundf(x * inv[:, None])).astype(np.int8)


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 34), as ``quantize_row_q8_0_ref``."""
    return pack_ref(*reference_quants_ref(x))


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """:func:`quantize_ref` of the rows ``x``: llama.cpp's ``quantize_q8_0`` ignores the importance."""
    return quantize_ref(x.reshape(-1, QK))


def activation_quants_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The x86 CPU backend's activation quantization (``quantize_row_q8_0``/``_q8_1``, AVX2) of
    float32 (n_blocks, 32): d = amax / 127 (float32, before its f16 rounding), the int8 quants
    (n, 32), and their sum as the CPU adds it (int32 (n,)): of the int32 conversions before the
    saturating packs (INT_MIN for inf and NaN), wrapping."""
    amax = np.abs(x).max(axis=1)
    d = amax / F32(127)
    scale = np.where(amax != 0, F32(127) / amax, F32(0)).astype(np.float32)
    v = x * scale[:, None]
    raw = np.where(np.isfinite(v), np.rint(v), -(2.0**31)).astype(np.int64)  # |v| <= 127 where finite
    total = (raw.sum(axis=1) + 2**31) % 2**32 - 2**31
    return d, np.clip(raw, -128, 127).astype(np.int8), total.astype(np.int32)


def quantize_activation_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 34), as the x86 CPU backend's ``quantize_row_q8_0``."""
    d, q, _ = activation_quants_ref(x)
    return pack_ref(d, q)


def block_dots_ref(act: np.ndarray, values: np.ndarray, dx: np.ndarray, sumi_first: bool = False) -> np.ndarray:
    """The generic scalar dot of llama.cpp for a format on Q8_0 activations, per row: ``sumi`` =
    sum over a block's 32 weights of value * q8 (exact), then block by block ``sumf += (dx * dy)
    * sumi``, or with ``sumi_first`` (Q4_0's order) ``sumf += (sumi * dx) * dy``.

    ``values``: int (rows, nb, 32), each weight's integer value in weight order; ``dx``: float32
    (rows, nb), each block's scale; ``act``: uint8 (nb, 34). Returns float32 (rows,)."""
    dy, q8 = fields_ref(act)
    sumi = (values.astype(np.int64) * q8.astype(np.int64)).sum(axis=-1).astype(np.float32)
    sumf = np.zeros(values.shape[0], dtype=np.float32)
    for b in range(values.shape[1]):
        if sumi_first:
            sumf = sumf + (sumi[:, b] * dx[:, b]) * dy[b]
        else:
            sumf = sumf + (dx[:, b] * dy[b]) * sumi[:, b]
    return sumf


def block_dot_terms_ref(act: np.ndarray, values: np.ndarray, dx: np.ndarray) -> DotTerms:
    """The exact parts of those dot products (:class:`DotTerms`): one term per block, the block's
    scale times the activations' d, times the sum of value * q8 over its weights."""
    dy, q8 = fields_ref(act)
    prod = values.astype(np.int64) * q8.astype(np.int64)
    return DotTerms(coef=dx.astype(np.float64) * dy.astype(np.float64), ints=prod.sum(axis=-1),
                    abs_ints=np.abs(prod).sum(axis=-1))


def dots_ref(values_ref: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
             sumi_first: bool = False) -> tuple[Callable[..., np.ndarray], Callable[..., DotTerms]]:
    """(gemv_ref, dot_terms_ref) of a 32-weight format on Q8_0 activations whose ``values_ref(w)``
    gives each block's scale and integer values, (d float32 (rows, nb), values int (rows, nb, 32)):
    :func:`block_dots_ref` (``sumi_first`` as there) and :func:`block_dot_terms_ref` of them."""

    def gemv_ref(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
        d, v = values_ref(w)
        return block_dots_ref(act, v, d, sumi_first)

    def dot_terms_ref(w: np.ndarray, act: np.ndarray) -> DotTerms:
        d, v = values_ref(w)
        return block_dot_terms_ref(act, v, d)

    return gemv_ref, dot_terms_ref


def gemv_ref(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Rows of Q8_0 blocks times Q8_0 activations, as ``ggml_vec_dot_q8_0_q8_0_generic``:
    ``w`` uint8 (rows, nb, 34), ``act`` uint8 (nb, 34). Returns float32 (rows,)."""
    d, qs = fields_ref(w)
    return block_dots_ref(act, qs, d)


def dot_terms_ref(w: np.ndarray, act: np.ndarray) -> DotTerms:
    """The exact parts of Q8_0 x Q8_0 dot products (:class:`DotTerms`)."""
    d, qs = fields_ref(w)
    return block_dot_terms_ref(act, qs, d)


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


@jit
def unpack(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What the dot kernels read from uint8 (nb, 34) Q8_0 activations, or float32 values that
    :data:`blocks` quantizes first, decoded once: (d float32 (nb,), quants int8 (nb, 32))."""
    act = blocks(x)
    nb = act.shape[0]
    d = np.empty(nb, dtype=np.float32)
    q = np.empty((nb, QK), dtype=np.int8)
    for b in range(nb):
        d[b] = simd.f16_at(act, b * BLOCK_BYTES)
        copy_quants(act, b * BLOCK_BYTES + 2, q, b * QK)
    return d, q


copy_quants = simd.byte_shuffle(range(QK))  # (src, src_at, dst, dst_at): one block's 32 quants
_to_pair_order = simd.byte_shuffle(simd.PAIR_ORDER)


@jit
def in_pairs(q: np.ndarray) -> np.ndarray:
    """A copy of int8 (nb, 32) activation quants in weight order whose first 4 * (nb // 4) blocks
    are in ``simd.PAIR_ORDER``, pair by pair: what a row dot that decodes pairs of blocks reads
    (``simd.row_dot_intrinsic``'s ``decode_pair``)."""
    out = np.empty_like(q)
    paired = q.shape[0] // 4 * 4
    for p in range(paired // 2):
        _to_pair_order(q, 2 * QK * p, out, 2 * QK * p)
    for b in range(paired, q.shape[0]):
        copy_quants(q, QK * b, out, QK * b)
    return out


@jit
def quant_sums(q: np.ndarray) -> np.ndarray:
    """Each block's sum of its quants, int32 (nb,) of int8 (nb, 32): what the formats whose values
    are quants minus an offset (Q4_0, Q5_0, MXFP4 shifted) take, offset times, from their blocks' integer dots."""
    out = np.empty(q.shape[0], dtype=np.int32)
    for b in range(q.shape[0]):
        out[b] = simd.sum32_int8(q, QK * b)
    return out


@inline
def amax(x: np.ndarray) -> np.float32:
    """The largest magnitude of 32 values (C's ``fmaxf`` loop; NaN never wins)."""
    return simd.amax32(x, 0)


@inline
def reference_quantize_block(x: np.ndarray, blk: np.ndarray, qs_offset: int) -> tuple[np.float32, np.int32]:
    """:func:`reference_quants_ref` of one block: d, rounded to f16, into ``blk[0:2]``, the quants
    into ``blk[qs_offset:]``. Returns (d before the rounding, the sum of the quants)."""
    d = amax(x) / F32(127)
    inv = F32(1) / d if d != 0 else F32(0)
    write_f16(blk, 0, d)
    total = np.int32(0)
    for j in range(QK):
        q = c_int8(roundf(x[j] * inv))
        blk[qs_offset + j] = np.uint8(q & 0xFF)
        total += q
    return d, total


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray) -> None:
    reference_quantize_block(x, blk, 2)


@inline
def quantize_activation_block(x: np.ndarray, blk: np.ndarray, qs_offset: int) -> tuple[np.float32, np.int32]:
    """One block of 32 activations as the x86 CPU backend's ``quantize_row_q8_0`` (and Q8_1's)
    quantizes it: d, rounded to f16, into ``blk[0:2]``, the quants into ``blk[qs_offset:]``.
    Returns (d before the rounding, the quants' sum as :func:`activation_quants_ref` gives it)."""
    largest = amax(x)
    scale = F32(127) / largest if largest != 0 else F32(0)
    d = largest / F32(127)
    write_f16(blk, 0, d)
    total = np.int64(0)
    for j in range(QK):  # selects, not branches, so that LLVM vectorises the loop
        v = x[j] * scale
        finite = abs(v) <= F32(128)
        # inf or NaN: the conversion gives INT_MIN, the saturating packs -128 (0x80)
        q = nearest_int(v) if finite else np.int32(-2147483648)
        blk[qs_offset + j] = np.uint8(q & 0xFF) if finite else np.uint8(0x80)
        total += q
    return d, np.int32(total)  # truncated: the CPU's int32 sum wraps


@inline
def _quantize_activation_block(x: np.ndarray, blk: np.ndarray) -> None:
    quantize_activation_block(x, blk, 2)


blocks = activation_blocks(_quantize_activation_block, QK, BLOCK_BYTES)


# What the row dots of the formats with Q8_0 activations read (``Loops.row_inputs``): (acts, quants),
# acts the dy and, for the formats whose values are quants less an offset, the quant sums; the
# quants in weight order, or in pairs for the row dots that decode two blocks at once.


@jit
def row_inputs(act: np.ndarray) -> tuple[tuple[np.ndarray], np.ndarray]:
    dy, q8 = unpack(act)
    return (dy,), q8


@jit
def row_inputs_paired(act: np.ndarray) -> tuple[tuple[np.ndarray], np.ndarray]:
    dy, q8 = unpack(act)
    return (dy,), in_pairs(q8)


@jit
def row_inputs_with_sums(act: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    dy, q8 = unpack(act)
    return (dy, quant_sums(q8)), q8


@jit
def row_inputs_with_sums_paired(act: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    dy, q8 = unpack(act)
    return (dy, quant_sums(q8)), in_pairs(q8)


def _decode(context, builder, wt, w_, woff_):  # type: ignore[no-untyped-def]
    """IR: the block's 32 quants (see ``simd.row_dot_intrinsic``)."""
    return simd.load_bytes(context, builder, wt, w_, simd.offset(builder, woff_, 2))


def _terms(lanes: simd.BlockLanes, sumi):  # type: ignore[no-untyped-def]
    """IR: ``sumi * (d * dy)`` (acts: dy)."""
    b = lanes.builder
    return b.fmul(lanes.float(sumi), b.fmul(lanes.f16(0), lanes.act(0)))


_row_dot = simd.row_dot_intrinsic(_decode, BLOCK_BYTES, "int8", _terms)
# Activations without a -128 quant (all but a block whose 127/max overflowed) take pmaddubsw.
_row_dot_no_128 = simd.row_dot_intrinsic(_decode, BLOCK_BYTES, "int8 by quants above -128", _terms)

_dequantize_one = simd.block32_dequantize_intrinsic(_decode, BLOCK_BYTES, simd.f16_header(0))


@jit
def _no_128(q8: np.ndarray) -> bool:
    """Whether no activation quant is -128 (then :data:`_row_dot_no_128` is exact)."""
    smallest = np.int32(0)
    for b in range(q8.shape[0]):
        for j in range(QK):
            smallest = min(smallest, np.int32(q8[b, j]))
    return smallest > -128


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q8_0", qtype=GGMLQuantizationType.Q8_0, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize=dequantize_ref, quantize=quantize_ref, gemv=gemv_ref,
                                   quantize_imatrix=quantize_imatrix_ref,
                                   quantize_activation=quantize_activation_ref),
                     dot_terms=dot_terms_ref, activation="Q8_0",
                     loops=Loops(row_inputs="q8_0.row_inputs", two_rows=True,
                                 faster_row_dot=("_no_128", "_row_dot_no_128"), quantize_activation=True,
                                 quantize_imatrix="ignored"))
