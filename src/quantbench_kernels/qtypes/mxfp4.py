"""MXFP4: 32 weights in 17 bytes (4.25 bits per weight), OCP microscaling FP4 (E2M1 values with
a shared E8M0 scale), dot products on Q8_0 activations.

::

    offset  size  field
         0     1  e   E8M0 exponent: the scale is 2**(e - 127); llama.cpp keeps half of it,
                      2**(e - 128) (e = 0 and 1: the float32 subnormals 2**-128 and 2**-127)
         1    16  qs  4-bit E2M1 codes: byte j holds weight j in its low nibble and weight j + 16
                      in its high nibble

    weight = 2**(e - 128) * KVALUES[q]     (KVALUES: the E2M1 values doubled, llama.cpp's
                                           kvalues_mxfp4, so that they are integers)

Quantize follows ``quantize_row_mxfp4_ref``: ``e = floor(log2(amax)) - 2 + 127`` (amax: the
block's largest magnitude; 0 for an all-zero block), each weight the nearest table value (the
first of equals). The dot product follows ``ggml_vec_dot_mxfp4_q8_0_generic`` (``sumf += (dy *
2**(e - 128)) * sumi``).
"""

from __future__ import annotations

import math

import numpy as np
from gguf import GGMLQuantizationType
from llvmlite import ir

from .. import refmath, simd
from ..compilation import Loops, inline
from ..jitmath import F32, bits_float, c_int8
from ..registry import BlockFormat, Ops
from . import q8_0

BLOCK_DTYPE = np.dtype([("e", "u1"), ("qs", "u1", 16)])
QK = 32
BLOCK_BYTES = 17
KVALUES = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.int8)


# ----------------------------------------------------------------------------------------------
# Reference (NumPy)
# ----------------------------------------------------------------------------------------------


def half_scale_ref(e: np.ndarray) -> np.ndarray:
    """llama.cpp's ``GGML_E8M0_TO_FP32_HALF``: 2**(e - 128) for uint8 ``e``, as float32 bits."""
    e = e.astype(np.uint32)
    return np.where(e < 2, np.uint32(0x00200000) << e, (e - 1) << 23).astype(np.uint32).view(np.float32)


def values_ref(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(2**(e - 128) float32 (...,), each weight's table value, int32 (..., 32)) of uint8 (..., 17) blocks."""
    b = blocks.view(BLOCK_DTYPE)[..., 0]
    return half_scale_ref(b["e"]), KVALUES.astype(np.int32)[refmath.nibbles_ref(b["qs"])]


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 17) -> ``out``, float32 (n_blocks, 32)."""
    d, v = values_ref(blocks)
    out[...] = v * d[:, None]


def exponent_ref(amax: np.ndarray) -> np.ndarray:
    """The E8M0 byte of blocks of largest magnitude ``amax`` (float32): C's ``(uint8_t)(floorf(
    log2f(amax)) - 2 + 127)``, log2 computed in float64 and rounded to float32 (uint8)."""
    with np.errstate(divide="ignore"):
        log2 = np.log2(amax.astype(np.float64)).astype(np.float32)
    e = refmath.c_int8(np.floor(log2) - F32(2) + F32(127)) & 0xFF
    return np.where(amax > 0, e, 0).astype(np.uint8)


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 17), as ``quantize_row_mxfp4_ref``."""
    e = exponent_ref(np.abs(x).max(axis=1))
    d = half_scale_ref(e)
    errors = np.abs(KVALUES.astype(np.float32) * d[:, None, None] - x[:, :, None])  # (n, 32, 16)
    # argmin: the first of equal errors
    return refmath.blocks_ref(BLOCK_DTYPE, e=e, qs=refmath.pack_nibbles_ref(np.argmin(errors, axis=-1)))


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """:func:`quantize_ref` of the rows ``x``: llama.cpp's ``quantize_mxfp4`` ignores the importance."""
    return quantize_ref(x.reshape(-1, QK))


# Dot products on Q8_0 activations, as the generic dot.
gemv_ref, dot_terms_ref = q8_0.dots_ref(values_ref)


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


_KVF = KVALUES.astype(np.float32)


@inline
def half_scale(e: int) -> np.float32:
    """:func:`half_scale_ref` of one exponent byte."""
    bits = (np.int32(0x00200000) << e) if e < 2 else (np.int32(e - 1) << 23)
    return bits_float(np.int32(bits))


@inline
def _nearest(v: np.float32, d: np.float32) -> np.int32:
    best = np.int32(0)
    best_err = abs(_KVF[0] * d - v)
    for k in range(1, 16):
        err = abs(_KVF[k] * d - v)
        if err < best_err:
            best = np.int32(k)
            best_err = err
    return best


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray) -> None:
    largest = q8_0.amax(x)
    e = np.int32(0)
    if largest > 0:
        log2 = F32(math.log2(np.float64(largest)))
        e = c_int8(F32(math.floor(log2)) - F32(2) + F32(127)) & 0xFF
    blk[0] = np.uint8(e)
    d = half_scale(e)
    for j in range(16):
        blk[1 + j] = np.uint8(_nearest(x[j], d) | (_nearest(x[j + 16], d) << 4))


# The block's table values (see ``simd.row_dot_intrinsic``).
_decode, _ = simd.nibble_decoders(qs_at=1, table=KVALUES.tolist())
# The dot reads the table values plus 12 (0..24: unsigned, pmaddubsw without llama.cpp's sign
# trick), two blocks at once where it can, and takes 12 times the activation block's quant sum
# off the integer dot.
_DOT_OFFSET = 12
_shifted, _shifted_pairs = simd.nibble_decoders(qs_at=1, table=(KVALUES + _DOT_OFFSET).tolist())


def _terms(lanes: simd.BlockLanes, sums):  # type: ignore[no-untyped-def]
    """IR: ``(dy * 2**(e - 128)) * sumi`` (acts: dy, the quant sums), the scale as
    :func:`half_scale` makes it, ``sumi`` the shifted values' dot less the offset's share."""
    b = lanes.builder
    sumi = lanes.less_offset(sums, _DOT_OFFSET, 1)
    e, one = lanes.u8(0), lanes.splat(simd.I32, 1)
    tiny = b.shl(lanes.splat(simd.I32, 0x00200000), b.and_(e, one))  # e < 2; the mask keeps the shift defined
    bits = b.select(b.icmp_unsigned("<", e, lanes.splat(simd.I32, 2)), tiny,
                    b.shl(b.sub(e, one), lanes.splat(simd.I32, 23)))
    scale = b.bitcast(bits, simd.vec(simd.F32, lanes.n))
    return b.fmul(b.fmul(lanes.act(0), scale), lanes.float(sumi))


_row_dot = simd.row_dot_intrinsic(_shifted, BLOCK_BYTES, "unsigned", _terms, decode_pair=_shifted_pairs)

def _half_scale_header(context, builder, wt, w_, woff_):  # type: ignore[no-untyped-def]
    """IR: the block's scale, :func:`half_scale` of its exponent byte (byte 0)."""
    i32 = simd.I32
    e = builder.zext(builder.load(simd.element_ptr(context, builder, wt, w_, woff_)), i32)
    bits = builder.select(builder.icmp_unsigned("<", e, ir.Constant(i32, 2)),
                          builder.shl(ir.Constant(i32, 0x00200000), e),
                          builder.shl(builder.sub(e, ir.Constant(i32, 1)), ir.Constant(i32, 23)))
    return [builder.bitcast(bits, simd.F32)]


_dequantize_one = simd.block32_dequantize_intrinsic(_decode, BLOCK_BYTES, _half_scale_header)


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="MXFP4", qtype=GGMLQuantizationType.MXFP4, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_0",
                     loops=Loops(quantize_work=16, row_inputs="q8_0.row_inputs_with_sums_paired", two_rows=True,
                                 quantize_imatrix="ignored"))
