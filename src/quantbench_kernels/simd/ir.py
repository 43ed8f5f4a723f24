"""LLVM IR primitives the intrinsics share: vector types and constants, shuffles (``pick``),
element pointers into Numba arrays, unaligned loads and stores, pairwise sums (``tree_sum``,
``fold``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from llvmlite import ir
from numba import types

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
F32 = ir.FloatType()


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


def fabs(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """``|v|`` of a ``<n x float>``: the sign bits cleared (NaN stays NaN)."""
    ints = vec(I32, v.type.count)
    return builder.bitcast(builder.and_(builder.bitcast(v, ints), splat_const(I32, 0x7FFFFFFF, v.type.count)), v.type)
