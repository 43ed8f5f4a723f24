"""Decoding 32-weight blocks into ``<32 x i8>`` values: nibbles and high bits, two blocks
per 256-bit vector (:data:`PAIR_ORDER`), 16-entry tables (IQ4_NL, MXFP4), sign tricks, and f16
scales (F16C or generic IR)."""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .dots import bits8, load_bytes
from .features import F16C, MASK_REGISTERS, PSHUFB
from .ir import F32, I8, I32, c_array, const_vec, element_ptr, offset, pick, splat_const, vec

# ---------------------------------------------------------------------------------------------
# The formats of 32-weight blocks (Q4_0 ... Q8_0, IQ4_NL, MXFP4; IQ4_XS's sub-blocks): a block's
# integer dot is the sum of 32 products of small integers (its decoded values, at most 127 in
# magnitude, times the activation's int8 quants). A format decodes its block into a <32 x i8>
# of values in weight order; :func:`dot32` multiplies it with the activation quants, pairwise
# in 16 bits (pmaddubsw where the values allow it, else pmaddwd) and sums the lanes: exact in
# 32 bits, so any grouping is C's sum.
# ---------------------------------------------------------------------------------------------


def nibbles32(builder: ir.IRBuilder, qs: ir.Value) -> ir.Value:
    """The 32 nibbles of a ``<16 x i8>`` in weight order (byte j: weight j in its low nibble, weight
    j + 16 in its high nibble), as ``<32 x i8>`` values 0..15."""
    low = builder.and_(qs, splat_const(I8, 0xF, 16))
    high = builder.lshr(qs, splat_const(I8, 4, 16))
    return builder.shuffle_vector(low, high, const_vec(I32, range(32)))


def load_u32(context, builder: ir.IRBuilder, aryty: types.Array, ary: ir.Value, offset_: ir.Value) -> ir.Value:
    """The 32-bit word at element ``offset_`` of a uint8 array (unaligned; the host's byte order,
    little-endian on every target Numba supports)."""
    return builder.load(builder.bitcast(element_ptr(context, builder, aryty, ary, offset_), I32.as_pointer()), align=1)


def bit_per_lane(builder: ir.IRBuilder, bits: ir.Value, to: int) -> ir.Value:
    """Bit j of the i32 ``bits`` in lane j of a ``<32 x i8>``, moved to bit ``to`` (Q5_0/Q5_1's qh).
    With AVX-512BW the word is a mask register as it is (a masked move); elsewhere each lane takes
    the byte that holds its bit (a shuffle), masks its bit and compares."""
    if MASK_REGISTERS:
        isset = builder.bitcast(bits, vec(ir.IntType(1), 32))
    else:
        spread = pick(builder, builder.bitcast(bits, vec(I8, 4)), [j // 8 for j in range(32)])
        masked = builder.and_(spread, const_vec(I8, [1 << (j % 8) for j in range(32)]))
        isset = builder.icmp_unsigned("!=", masked, splat_const(I8, 0, 32))
    return builder.select(isset, splat_const(I8, 1 << to, 32), splat_const(I8, 0, 32))


# Two blocks of 16 bytes of nibbles in one 256-bit vector: its low nibbles are the first 16 weights
# of each block (block a's in the low 128 bits, b's in the high), its high nibbles the last 16.
# PAIR_ORDER[k]: the weight (0..63, block a's then b's) whose activation quant goes to position k of
# the pair, so that the activation quants, stored once per vector in this order, match.
PAIR_ORDER = [32 * ((k // 16) % 2) + 16 * (k // 32) + k % 16 for k in range(64)]


def nibble_decoders(qs_at: int, qh_at: int | None = None, table: Sequence[int] | None = None):  # type: ignore[no-untyped-def]
    """``(decode, decode_pair)`` for :func:`row_dot_intrinsic`, of a format of 32-weight blocks whose
    16 bytes of nibbles start at byte ``qs_at`` (weight j in the low nibble of byte j, weight 16 + j
    in the high one), with a fifth bit per weight in the little-endian u32 at byte ``qh_at`` (bit
    j: weight j) if given, the 4 or 5 bits mapped through ``table`` (16 int8 values) if given.
    ``decode_pair`` is None for the formats with a fifth bit: spreading two blocks' bits over the
    pair's lanes made their gemv slower, where the 4-bit formats gained."""

    def finish(builder: ir.IRBuilder, index: ir.Value, high: ir.Value | None) -> ir.Value:
        if high is not None:
            index = builder.or_(index, high)
        return index if table is None else lookup16(builder, table, index)

    def decode(context, builder, wt, w_, at):  # type: ignore[no-untyped-def]
        index = nibbles32(builder, load_bytes(context, builder, wt, w_, offset(builder, at, qs_at), n=16))
        high = None if qh_at is None else bit_per_lane(builder, load_u32(context, builder, wt, w_,
                                                                         offset(builder, at, qh_at)), 4)
        return finish(builder, index, high)

    def decode_pair(context, builder, wt, w_, at_a, at_b):  # type: ignore[no-untyped-def]
        qs = [load_bytes(context, builder, wt, w_, offset(builder, at, qs_at), n=16) for at in (at_a, at_b)]
        both = builder.shuffle_vector(qs[0], qs[1], const_vec(I32, range(32)))
        return tuple(finish(builder, bits8(builder, both, 4 * e, 0xF), None) for e in range(2))

    return decode, (decode_pair if qh_at is None else None)


def lookup16(builder: ir.IRBuilder, table: Sequence[int], index: ir.Value) -> ir.Value:
    """``table[index[j]]`` for a ``<32 x i8>`` of indices 0..15 and a table of 16 int8 values
    (IQ4_NL's and MXFP4's non-linear values): x86's pshufb where there is one, else a tree of
    selects on the index bits."""
    if PSHUFB is not None:
        fnty = ir.FunctionType(vec(I8, 32), [vec(I8, 32)] * 2)
        fn = cgutils.get_or_insert_function(builder.module, fnty, PSHUFB)
        return builder.call(fn, [const_vec(I8, [v & 0xFF for v in table] * 2), index])
    level = [splat_const(I8, v & 0xFF, 32) for v in table]
    for bit in range(4):
        chosen = builder.icmp_unsigned("!=", builder.and_(index, splat_const(I8, 1 << bit, 32)),
                                       splat_const(I8, 0, 32))
        level = [builder.select(chosen, level[k + 1], level[k]) for k in range(0, len(level), 2)]
    return level[0]


def f16_to_f32(builder: ir.IRBuilder, h: ir.Value) -> ir.Value:
    """IR: the f16 bit pattern ``h`` (i16, or a vector of them) as float32, exactly and without branches: normals by
    moving the exponent and mantissa bits, inf and NaN likewise (payload kept), subnormals as
    their integer mantissa times 2**-24; the sign bit last."""
    n = h.type.count if isinstance(h.type, ir.VectorType) else None
    i32, f32 = (I32, F32) if n is None else (vec(I32, n), vec(F32, n))

    def c(ty: ir.Type, value: float) -> ir.Constant:
        return ir.Constant(ty, value) if n is None else ir.Constant(ty, [value] * n)

    if F16C:
        return builder.fpext(builder.bitcast(h, ir.HalfType() if n is None else vec(ir.HalfType(), n)), f32)
    h32 = builder.zext(h, i32)
    em = builder.and_(h32, c(i32, 0x7FFF))
    exponent = builder.lshr(em, c(i32, 10))
    moved = builder.shl(em, c(i32, 13))
    normal = builder.add(moved, c(i32, (127 - 15) << 23))
    special = builder.add(moved, c(i32, (255 - 31) << 23))
    bits = builder.select(builder.icmp_unsigned("==", exponent, c(i32, 31)), special, normal)
    tiny = builder.fmul(builder.uitofp(em, f32), c(f32, 2.0**-24))
    bits = builder.select(builder.icmp_unsigned("==", exponent, c(i32, 0)), builder.bitcast(tiny, i32), bits)
    sign = builder.shl(builder.and_(h32, c(i32, 0x8000)), c(i32, 16))
    return builder.bitcast(builder.or_(bits, sign), f32)


@intrinsic
def f16_at(typingctx, w, at):  # type: ignore[no-untyped-def]
    """The little-endian f16 at byte ``at`` of ``w`` (uint8, C-contiguous), as float32: what
    ``jitmath.read_f16`` gives, without its branches (a block's scale in the 32-weight dots)."""
    if not c_array(w, types.uint8):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        w_, at_ = args
        return load_f16(context, builder, signature.args[0], w_, at_)

    return types.float32(w, at), codegen


def load_f16(context, builder: ir.IRBuilder, aryty: types.Array, ary: ir.Value, offset_: ir.Value) -> ir.Value:
    """IR: the little-endian f16 at byte ``offset_`` of ``ary`` (uint8), as float32."""
    ptr = builder.bitcast(element_ptr(context, builder, aryty, ary, offset_), ir.IntType(16).as_pointer())
    return f16_to_f32(builder, builder.load(ptr, align=1))


def f16_header(*at: int):  # type: ignore[no-untyped-def]
    """A block header of f16 scales at bytes ``at`` of the block (d, or d and a min): the
    ``header`` of :func:`indexed_dequantize_intrinsic`."""

    def header(context, builder: ir.IRBuilder, wt: types.Array, w_: ir.Value, woff_: ir.Value) -> list[ir.Value]:
        return [load_f16(context, builder, wt, w_, offset(builder, woff_, a)) for a in at]

    return header


def less_offset(decode, offset: int):  # type: ignore[no-untyped-def]
    """A ``decode`` of :func:`row_dot_intrinsic` (and the 32-weight dequantize) whose values are those
    of ``decode`` less ``offset``: Q4_0's q - 8, Q5_0's q - 16."""

    def decoded(context, builder: ir.IRBuilder, wt: types.Array, w_: ir.Value, woff_: ir.Value) -> ir.Value:
        return builder.sub(decode(context, builder, wt, w_, woff_), splat_const(I8, offset, 32))

    return decoded
