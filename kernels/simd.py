"""Helpers for Numba intrinsics that emit LLVM vector IR: the dot-product kernels' block loops.

LLVM does not find the best vector code for the k-quant dot products from scalar loops (it keeps
one accumulator chain and widens too early), so the formats write their per-block integer work
as vector IR with these helpers. The IR is generic (``<64 x i16>`` multiplies, shuffles, adds)
and compiles on any target; one operation, the 16-bit multiply-add of pairs, calls x86's
``pmaddwd`` where the host CPU has it (AVX-512BW or AVX2: LLVM then fuses the additions into
``vpdpwssd`` on VNNI CPUs) and is spelled out in generic IR elsewhere. Integer sums are exact, so
any grouping gives the same bits; only the float steps, kept in C's order, decide the result.

``QUANTBENCH_GENERIC_IR=1`` forces the generic spelling (used by the tests to check that path).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core import config as numba_config

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
F32 = ir.FloatType()


def _pmaddwd_intrinsic() -> tuple[str, int] | None:
    """(LLVM intrinsic, i16 lanes) of the host's widest pmaddwd, or None for the generic IR.

    Numba compiles for the host CPU unless NUMBA_CPU_NAME / NUMBA_CPU_FEATURES name another target
    (portable caches do): then the host's features say nothing about the target, and the generic
    IR is the safe choice."""
    if os.environ.get("QUANTBENCH_GENERIC_IR", "0") not in ("", "0"):
        return None
    if numba_config.CPU_NAME or numba_config.CPU_FEATURES:
        return None
    features = llvm.get_host_cpu_features()
    if features.get("avx512bw"):
        return "llvm.x86.avx512.pmaddw.d.512", 32
    if features.get("avx2"):
        return "llvm.x86.avx2.pmadd.wd", 16
    return None


PMADDWD = _pmaddwd_intrinsic()
# Part of the kernels' cache stamp: code compiled for one spelling must not be reused for another.
CODEGEN = f"pmaddwd={PMADDWD[0] if PMADDWD else 'generic'}"


def vec(t: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(t, n)


def const_vec(t: ir.Type, values: Iterable[int]) -> ir.Constant:
    values = list(values)
    return ir.Constant(vec(t, len(values)), values)


def splat_const(t: ir.Type, value: int, n: int) -> ir.Constant:
    return ir.Constant(vec(t, n), [value] * n)


def splat(builder: ir.IRBuilder, scalar: ir.Value, n: int) -> ir.Value:
    """A vector of ``n`` copies of ``scalar``."""
    vty = vec(scalar.type, n)
    v = builder.insert_element(ir.Constant(vty, None), scalar, ir.Constant(I32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, None), const_vec(I32, [0] * n))


def pick(builder: ir.IRBuilder, v: ir.Value, idx: Iterable[int]) -> ir.Value:
    """The lanes ``idx`` of ``v``, as a new vector (a constant shuffle)."""
    return builder.shuffle_vector(v, ir.Constant(v.type, None), const_vec(I32, idx))


def element_ptr(context, builder: ir.IRBuilder, aryty: types.Array, ary: ir.Value, offset: ir.Value) -> ir.Value:
    """Pointer to element ``offset`` (counted in elements from the start) of a C-contiguous array."""
    data = context.make_array(aryty)(context, builder, ary).data
    if offset.type.width < 64:
        offset = builder.sext(offset, I64)
    return builder.gep(data, [offset])


def load(builder: ir.IRBuilder, ptr: ir.Value, vty: ir.VectorType) -> ir.Value:
    """An unaligned vector load of ``vty`` at ``ptr``."""
    return builder.load(builder.bitcast(ptr, vty.as_pointer()), align=1)


def store(builder: ir.IRBuilder, value: ir.Value, ptr: ir.Value) -> None:
    builder.store(value, builder.bitcast(ptr, value.type.as_pointer()), align=1)


def offset(builder: ir.IRBuilder, base: ir.Value, delta: int) -> ir.Value:
    return builder.add(base, ir.Constant(base.type, delta))


def madd16(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """x86's pmaddwd on ``<2n x i16>`` vectors: ``<n x i32>`` of ``a[2k]*b[2k] + a[2k+1]*b[2k+1]``."""
    n = a.type.count // 2
    if PMADDWD is not None and a.type.count % PMADDWD[1] == 0:
        name, width = PMADDWD
        fnty = ir.FunctionType(vec(I32, width // 2), [vec(I16, width)] * 2)
        fn = cgutils.get_or_insert_function(builder.module, fnty, name)
        parts = [builder.call(fn, [pick(builder, a, range(c, c + width)), pick(builder, b, range(c, c + width))])
                 for c in range(0, 2 * n, width)]
        while len(parts) > 1:  # concatenate
            parts = [builder.shuffle_vector(parts[k], parts[k + 1], const_vec(I32, range(2 * parts[k].type.count)))
                     for k in range(0, len(parts), 2)]
        return parts[0]
    wide = vec(I32, n)
    even, odd = range(0, 2 * n, 2), range(1, 2 * n, 2)
    lo = builder.mul(builder.sext(pick(builder, a, even), wide), builder.sext(pick(builder, b, even), wide))
    hi = builder.mul(builder.sext(pick(builder, a, odd), wide), builder.sext(pick(builder, b, odd), wide))
    return builder.add(lo, hi)


def tree_sum(builder: ir.IRBuilder, values: Sequence[ir.Value]) -> ir.Value:
    """The sum of equal-typed vectors, added pairwise (short dependency chains)."""
    values = list(values)
    while len(values) > 1:
        values = [builder.add(values[k], values[k + 1]) if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
    return values[0]


def fold(builder: ir.IRBuilder, v: ir.Value, width: int) -> ir.Value:
    """Lane-wise sum of the consecutive ``width``-lane chunks of ``v``: lane l of the result is
    the sum of lanes l, l + width, l + 2 width... (``width`` = 1: the sum of all lanes)."""
    n = v.type.count
    while n > width:
        half = n // 2
        v = builder.add(pick(builder, v, range(half)), pick(builder, v, range(half, n)))
        n = half
    return v


def c_array(ty: types.Type, dtype: types.Type) -> bool:
    """Whether a Numba type is a C-contiguous array of ``dtype`` (the intrinsics index flatly)."""
    return isinstance(ty, types.Array) and ty.layout == "C" and ty.dtype == dtype


# ---------------------------------------------------------------------------------------------
# The 8-lane k-quant dot product (Q3_K, Q4_K, Q5_K, Q6_K): llama.cpp's generic C sums, per block,
# aux32[l] = sum of scale(w) * q(w) * q8(w) over the weights w with w % 8 == l, then does
# sums[l] += d * aux32[l] in float. A format's intrinsic decodes a block into 4 parts of 32 pairs
# of 16-bit quants, both weights of a pair in the same lane, in the order its Q8_ORDER puts the
# Q8_K quants; these helpers do the rest.
# ---------------------------------------------------------------------------------------------


def load_bytes_i32(context, builder: ir.IRBuilder, aryty: types.Array, ary: ir.Value, offset_: ir.Value,
                   n: int) -> ir.Value:
    """``n`` bytes of a uint8 array from element ``offset_``, each zero-extended to an i32 lane."""
    return builder.zext(load(builder, element_ptr(context, builder, aryty, ary, offset_), vec(I8, n)), vec(I32, n))


def pairs16(builder: ir.IRBuilder, first: ir.Value, second: ir.Value) -> ir.Value:
    """Two ``<n x i32>`` vectors of 16-bit values (signed or not) as one ``<2n x i16>``: lane 2t is
    ``first[t]``, lane 2t + 1 is ``second[t]`` (little-endian halves of 32-bit lanes, no shuffle)."""
    n = first.type.count
    low = builder.and_(first, splat_const(I32, 0xFFFF, n))
    return builder.bitcast(builder.or_(low, builder.shl(second, splat_const(I32, 16, n))), vec(I16, 2 * n))


def lanes_dot(context, builder: ir.IRBuilder, q_parts: Sequence[ir.Value], scale_parts: Sequence[ir.Value],
              q8ty: types.Array, q8: ir.Value, q8_offset: ir.Value) -> ir.Value:
    """aux32 (``<8 x i32>``) of one block: part c of ``q_parts`` (``<64 x i16>`` quants) meets the
    block's Q8_K quants 64c..64c + 63 (int16, from ``q8_offset`` of ``q8``), each first multiplied by
    its weight's scale (``scale_parts``, ``<64 x i16>``; scale times q8 must fit in 16 bits)."""
    parts = []
    for c, (q, scale) in enumerate(zip(q_parts, scale_parts, strict=True)):
        q8p = element_ptr(context, builder, q8ty, q8, offset(builder, q8_offset, 64 * c))
        parts.append(madd16(builder, q, builder.mul(load(builder, q8p, vec(I16, 64)), scale)))
    return fold(builder, tree_sum(builder, parts), 8)


def add_scaled_lanes(context, builder: ir.IRBuilder, sumsty: types.Array, sums: ir.Value, d: ir.Value,
                     aux32: ir.Value) -> None:
    """``sums[l] += d * (float)aux32[l]`` for the 8 lanes (float32, C's order in each lane)."""
    sp = element_ptr(context, builder, sumsty, sums, ir.Constant(I64, 0))
    scaled = builder.fmul(splat(builder, d, 8), builder.sitofp(aux32, vec(F32, 8)))
    store(builder, builder.fadd(load(builder, sp, vec(F32, 8)), scaled), sp)


def lane_scales(builder: ir.IRBuilder, scales: ir.Value, sub_blocks: Sequence[int], signed: bool) -> ir.Value:
    """``<64 x i16>`` of the i8 ``scales`` vector's entries ``sub_blocks`` (the scale of each quant
    of a part, in its pair order), sign- or zero-extended."""
    picked = pick(builder, scales, sub_blocks)
    return builder.sext(picked, vec(I16, 64)) if signed else builder.zext(picked, vec(I16, 64))
