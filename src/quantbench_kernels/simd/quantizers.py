"""The quantizers' vector helpers: a block's first extreme value as C's sequential loops find
it (ties and zeros' signs included), the levels of 32 values written at once, and f16 rounding
through F16C."""

from __future__ import annotations

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .ir import F32, I8, I16, I32, I64, c_array, element_ptr, fabs, load, pick, splat, splat_const, store, vec

# ---------------------------------------------------------------------------------------------
# A block's extreme value, as C's sequential loops find it (``if (v > best) best = v``: the first
# element to reach the extreme wins ties, NaN never wins), for the 32-weight quantizers. A vector
# max/min in any order gives the extreme's value; the first element equal to it (a compare mask
# and a count of trailing zeros) gives the element, so the sign of a zero is C's too.
# ---------------------------------------------------------------------------------------------

EXTREMES = ("largest", "min", "max", "magnitude")


def _extreme(builder: ir.IRBuilder, x: ir.Value, better: str, start: float) -> ir.Value:
    """The smallest ("<") or largest (">") lane of ``x`` (``<32 x float>``), NaN lanes skipped,
    ``start`` if all are NaN: its value only (a tree of selects; a zero's sign is either)."""
    start_v = ir.Constant(x.type, [ir.Constant(F32, start)] * x.type.count)
    best, n = builder.select(builder.fcmp_unordered("uno", x, x), start_v, x), x.type.count
    while n > 1:
        lo, hi = pick(builder, best, range(n // 2)), pick(builder, best, range(n // 2, n))
        best = builder.select(builder.fcmp_ordered(better, hi, lo), hi, lo)
        n //= 2
    return builder.extract_element(best, ir.Constant(I32, 0))


def _unless(builder: ir.IRBuilder, plain: ir.Value, rare: ir.Value, fallback) -> ir.Value:  # type: ignore[no-untyped-def]
    """``plain``, or where ``rare`` (an i1) holds, what ``fallback()`` emits (in its own block)."""
    entry = builder.block
    with builder.if_then(rare, likely=False):
        slow = fallback()
        then = builder.block
    result = builder.phi(plain.type)
    result.add_incoming(plain, entry)
    result.add_incoming(slow, then)
    return result


def _first_extreme_codegen(builder: ir.IRBuilder, ptr: ir.Value, kind: str) -> ir.Value:
    """A non-zero minimum or maximum is its elements' bit pattern (and +-inf from the start is C's
    too): only a zero needs the first element equal to it, for its sign. The element of largest
    magnitude is the maximum where that beats minus the minimum, the minimum where minus it beats
    the maximum; only a tie (a and -a, zeros, all NaN) needs the first element."""
    x = load(builder, ptr, vec(F32, 32))
    if kind == "magnitude":  # a value only, from C's amax = 0: no element to find
        return _extreme(builder, fabs(builder, x), ">", 0.0)
    if kind != "largest":
        start, better = (math.inf, "<") if kind == "min" else (-math.inf, ">")
        best = _extreme(builder, x, better, start)
        zero = builder.fcmp_ordered("==", best, ir.Constant(F32, 0.0))
        return _unless(builder, best, zero, lambda: _first_equal(builder, x, x, best, start, kind))
    high, low = _extreme(builder, x, ">", -math.inf), _extreme(builder, x, "<", math.inf)
    minus_low = builder.fsub(ir.Constant(F32, -0.0), low)
    high_wins = builder.fcmp_ordered(">", high, minus_low)
    plain = builder.select(high_wins, high, low)
    tie = builder.not_(builder.or_(high_wins, builder.fcmp_ordered(">", minus_low, high)))
    magnitudes = fabs(builder, x)
    # In a tie the largest magnitude is ``high`` (-inf if all are NaN: no magnitude equals it).
    return _unless(builder, plain, tie, lambda: _first_equal(builder, x, magnitudes, high, 0.0, kind))


def _first_equal(builder: ir.IRBuilder, x: ir.Value, key: ir.Value, best: ir.Value, start: float,
                 kind: str) -> ir.Value:
    """The first element of ``x`` whose ``key`` equals ``best`` (``start`` if none; for "largest"
    also if ``best`` is 0)."""
    hits = builder.bitcast(builder.fcmp_ordered("==", key, splat(builder, best, 32)), I32)  # NaN: never
    cttz = cgutils.get_or_insert_function(builder.module, ir.FunctionType(I32, [I32, ir.IntType(1)]), "llvm.cttz.i32")
    first = builder.call(cttz, [hits, ir.Constant(ir.IntType(1), 0)])  # 32 where nothing is equal
    value = builder.extract_element(x, builder.and_(first, ir.Constant(I32, 31)))
    none = builder.icmp_unsigned("==", hits, ir.Constant(I32, 0))
    if kind == "largest":
        none = builder.or_(none, builder.fcmp_ordered("==", best, ir.Constant(F32, 0.0)))
    return builder.select(none, ir.Constant(F32, start), value)


def first_extreme32_intrinsic(kind: str):  # type: ignore[no-untyped-def]
    """The intrinsic ``first_extreme(x, at) -> float32`` over ``x[at:at + 32]`` (float32,
    C-contiguous): for ``kind`` "largest", C's ``if (fabsf(v) > amax) { amax = fabsf(v); max = v; }``
    from 0 (the element, signed; 0 if none beats 0); "magnitude", that loop's ``amax`` (C's
    ``fmaxf`` loop from 0); "min" and "max", ``if (v < min) min = v`` from +inf and
    ``if (v > max) max = v`` from -inf."""
    if kind not in EXTREMES:
        raise ValueError(f"first_extreme32_intrinsic: kind must be one of {EXTREMES}, got {kind!r}")

    @intrinsic
    def first_extreme(typingctx, x, at):  # type: ignore[no-untyped-def]
        if not c_array(x, types.float32):
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            x_, at_ = args
            return _first_extreme_codegen(builder, element_ptr(context, builder, signature.args[0], x_, at_), kind)

        return types.float32(x, at), codegen

    return first_extreme


first_largest32 = first_extreme32_intrinsic("largest")
min32 = first_extreme32_intrinsic("min")
max32 = first_extreme32_intrinsic("max")
amax32 = first_extreme32_intrinsic("magnitude")


@intrinsic
def first_largest256(typingctx, x, at):  # type: ignore[no-untyped-def]
    """:data:`first_largest32` over ``x[at:at + 256]`` (float32, C-contiguous) at once, a Q8_K
    block: C's ``if (fabsf(v) > amax) { amax = fabsf(v); max = v; }`` from 0 gives ``max``, the
    first element of the largest magnitude (NaN never wins; 0 if nothing beats 0). The largest
    magnitude is one tree over the block, then the first element of that magnitude is a compare
    mask's trailing zeros (eight trees of 32 and the sign tests were slower)."""
    if not c_array(x, types.float32):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        x_, at_ = args
        v = load(builder, element_ptr(context, builder, signature.args[0], x_, at_), vec(F32, 256))
        magnitudes = fabs(builder, v)
        best = _extreme(builder, magnitudes, ">", 0.0)
        hits = builder.bitcast(builder.fcmp_ordered("==", magnitudes, splat(builder, best, 256)), ir.IntType(256))
        cttz = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.IntType(256), [ir.IntType(256), ir.IntType(1)]), "llvm.cttz.i256")
        first = builder.trunc(builder.call(cttz, [hits, ir.Constant(ir.IntType(1), 0)]), I32)
        value = builder.extract_element(v, builder.and_(first, ir.Constant(I32, 255)))
        zero = builder.fcmp_ordered("==", best, ir.Constant(F32, 0.0))  # no element beat 0 (or none but NaN)
        return builder.select(zero, ir.Constant(F32, 0.0), value)

    return types.float32(x, at), codegen


@intrinsic
def levels32(typingctx, x, xat, blk, bat, sub, inv, add, nmax):  # type: ignore[no-untyped-def]
    """The 32-weight quantizers' levels of ``x[xat:xat + 32]`` (float32, C-contiguous), as C
    computes each one: ``MIN(nmax, (int8_t)((x - sub) * inv + add))`` (float32 steps in that order;
    the ``(int8_t)`` as :func:`jitmath.c_int8`; nmax 127 or more: no MIN). Writes their low nibbles
    to ``blk[bat:bat + 16]`` (uint8, C-contiguous; byte j: weight j low, weight j + 16 high) and
    returns bit 4 of each level as a uint32 (bit j: weight j), Q5's ``qh``."""
    if not (c_array(x, types.float32) and c_array(blk, types.uint8) and sub == inv == add == types.float32
            and isinstance(nmax, types.Integer)):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        x_, xat_, blk_, bat_, sub_, inv_, add_, nmax_ = args
        xt, _, bt = signature.args[:3]
        v = load(builder, element_ptr(context, builder, xt, x_, xat_), vec(F32, 32))
        v = builder.fadd(builder.fmul(builder.fsub(v, splat(builder, sub_, 32)), splat(builder, inv_, 32)),
                         splat(builder, add_, 32))
        # (int8_t) as gcc's cvttss2si: |v| >= 2**31 or NaN gives INT_MIN, whose low byte is 0.
        inside = builder.fcmp_ordered("<", fabs(builder, v), ir.Constant(vec(F32, 32), [2.0**31] * 32))
        ints = builder.select(inside, builder.fptosi(v, vec(I32, 32)), splat_const(I32, 0, 32))
        levels = builder.sext(builder.trunc(ints, vec(I8, 32)), vec(I32, 32))
        cap = splat(builder, builder.trunc(nmax_, I32) if nmax_.type.width > 32 else nmax_, 32)
        levels = builder.trunc(builder.select(builder.icmp_signed("<", cap, levels), cap, levels), vec(I8, 32))
        nibbles = builder.and_(levels, splat_const(I8, 0xF, 32))
        packed = builder.or_(pick(builder, nibbles, range(16)),
                             builder.shl(pick(builder, nibbles, range(16, 32)), splat_const(I8, 4, 16)))
        store(builder, packed, element_ptr(context, builder, bt, blk_, bat_))
        high = builder.icmp_unsigned("!=", builder.and_(levels, splat_const(I8, 0x10, 32)), splat_const(I8, 0, 32))
        return builder.bitcast(high, I32)

    return types.uint32(x, xat, blk, bat, sub, inv, add, nmax), codegen


@intrinsic
def f16c_bits(typingctx, v):  # type: ignore[no-untyped-def]
    """``v`` (float32) rounded to f16 (ties to even, overflow to inf, subnormals exact) by F16C's
    vcvtps2ph, as its bit pattern (int64); a NaN as the quiet NaN 0x7E00 of its sign, as
    :func:`jitmath.f32_to_f16_bits` encodes it. Only where :data:`F16C`."""
    if v != types.float32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        (v_,) = args
        bits = builder.zext(builder.bitcast(builder.fptrunc(v_, ir.HalfType()), I16), I64)
        sign = builder.and_(builder.lshr(builder.zext(builder.bitcast(v_, I32), I64), ir.Constant(I64, 16)),
                            ir.Constant(I64, 0x8000))
        nan = builder.or_(sign, ir.Constant(I64, 0x7E00))
        return builder.select(builder.fcmp_unordered("uno", v_, v_), nan, bits)

    return types.int64(v), codegen
