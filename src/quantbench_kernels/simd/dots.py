"""Integer dot algebra on vectors of small integers: the 16-bit multiply-add of pairs
(``madd16``: pmaddwd or generic IR), unsigned-by-signed bytes (``maddubs``, ``dot_quads``: VNNI's
vpdpbusd where present), Q2_K's 64-byte lookup dot, the 8-lane k-quant dots (``lanes_dot``), the
32-weight blocks' ``dot32_lanes`` and the transposed sums of a step's lanes. Integer sums are
exact, so every grouping here gives C's sums bit for bit."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llvmlite import ir
from numba import types
from numba.core import cgutils

from .features import PMADDUBSW, PMADDWDS, PSIGNB, VPDPBUSD, WIDE_LOOKUP_DOT
from .ir import I8, I16, I32, const_vec, element_ptr, fold, load, pick, splat_const, tree_sum, vec


def madd16(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """x86's pmaddwd on ``<2n x i16>`` vectors: ``<n x i32>`` of ``a[2k]*b[2k] + a[2k+1]*b[2k+1]``."""
    n = a.type.count // 2
    fitting = [(name, width) for name, width in PMADDWDS if a.type.count % width == 0]
    if fitting:
        name, width = fitting[0]
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


# ---------------------------------------------------------------------------------------------
# The 8-lane k-quant dot products (Q3_K, Q4_K, Q5_K, Q6_K). llama.cpp's generic C sums, per block,
# aux32[l] = the sum of scale(w) * q(w) * q8(w) over the weights w with w % 8 == l, then does
# sums[l] += d * aux32[l] in float. A format's intrinsic decodes its block into 8 chunks of 32
# unsigned quants (chunk t: weights 32t..32t + 31, in order) and gives the scales; these helpers
# do the rest with two multiply-adds per 64 weights:
#   1. each chunk's bytes are reordered within each 16-byte half so that byte pairs hold the
#      weights m and m + 8 of the half (the same lane m; ``load_bytes(lane_order=True)``); the
#      Q8_K quants are stored in that order once per vector (:data:`LANE_Q8_ORDER`);
#   2. pmaddubsw: unsigned quant times int8 q8, pair-summed: per half, lane m's two products
#      (at most 2 * 63 * 128 in magnitude: no saturation); a format whose quants carry an offset
#      (q - 4, q - 32) subtracts offset * (the pair's q8 sum), stored once per vector too;
#   3. two chunks' pair sums are interleaved per lane and pmaddwd multiplies each by its
#      sub-block's scale and adds the two chunks: <8 x i32>, lanes 0-3 (or 4-7) per half;
#   4. the halves and the block's 4 chunk pairs are added up: aux32, lane by lane.
# Integer sums are exact, so this grouping gives C's aux32 bit for bit.
# ---------------------------------------------------------------------------------------------

# Within a 16-byte half: byte 2m + e holds weight m + 8e of the half.
_HALF_ORDER = [p // 2 + 8 * (p % 2) for p in range(16)]
# LANE_Q8_ORDER[k]: the weight (0..255) of a block whose Q8_K quant goes to position k.
LANE_Q8_ORDER = [32 * (k // 32) + 16 * ((k % 32) // 16) + _HALF_ORDER[k % 16] for k in range(256)]
# pmaddwd's pairs: per 128-bit half, lanes 0-3 (LOW) or 4-7 (HIGH) of two chunks, interleaved.
_PAIR_LOW = [h * 8 + k // 2 + 16 * (k % 2) for h in range(2) for k in range(8)]
_PAIR_HIGH = [i + 4 for i in _PAIR_LOW]


def maddubs(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """x86's pmaddubsw on ``<32 x i8>``: ``<16 x i16>`` of ``a[2k]*b[2k] + a[2k+1]*b[2k+1]``, ``a``
    unsigned and ``b`` signed. The generic IR adds without saturating: the same result as long as
    the sums fit in 16 bits, which the callers guarantee."""
    if PMADDUBSW is not None:
        fnty = ir.FunctionType(vec(I16, 16), [vec(I8, 32)] * 2)
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty, PMADDUBSW[0]), [a, b])
    even, odd = range(0, 32, 2), range(1, 32, 2)
    wide = vec(I16, 16)
    lo = builder.mul(builder.zext(pick(builder, a, even), wide), builder.sext(pick(builder, b, even), wide))
    hi = builder.mul(builder.zext(pick(builder, a, odd), wide), builder.sext(pick(builder, b, odd), wide))
    return builder.add(lo, hi)


def dot_quads(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """``<8 x i32>`` of the sums of four products ``a[4k + i] * b[4k + i]`` of two ``<32 x i8>``,
    ``a`` unsigned and ``b`` signed, each pair of them fitting in 16 bits (as :func:`maddubs` needs):
    VNNI's vpdpbusd where the CPU has it (one instruction), else pmaddubsw and pmaddwd by ones."""
    if VPDPBUSD is not None:
        i32x8 = vec(I32, 8)
        fnty = ir.FunctionType(i32x8, [i32x8] * 3)
        fn = cgutils.get_or_insert_function(builder.module, fnty, VPDPBUSD)
        return builder.call(fn, [splat_const(I32, 0, 8), builder.bitcast(a, i32x8), builder.bitcast(b, i32x8)])
    return madd16(builder, maddubs(builder, a, b), splat_const(I16, 1, 16))


def lookup64(builder: ir.IRBuilder, table: ir.Value, index: ir.Value) -> ir.Value:
    """``<64 x i8>`` of ``table[index[k] & 63]`` (two ``<64 x i8>``): one vpermb (needs
    :data:`WIDE_LOOKUP_DOT`)."""
    fnty = ir.FunctionType(vec(I8, 64), [vec(I8, 64)] * 2)
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, WIDE_LOOKUP_DOT[0]), [table, index])


def dot_quads64(builder: ir.IRBuilder, acc: ir.Value, a: ir.Value, b: ir.Value) -> ir.Value:
    """``acc`` (``<16 x i32>``) plus the sums of four products ``a[4k + i] * b[4k + i]`` of two
    ``<64 x i8>``, ``a`` unsigned and ``b`` signed (exact: 32-bit lanes, no saturation): one
    512-bit vpdpbusd (needs :data:`WIDE_LOOKUP_DOT`)."""
    i32x16 = vec(I32, 16)
    fnty = ir.FunctionType(i32x16, [i32x16] * 3)
    fn = cgutils.get_or_insert_function(builder.module, fnty, WIDE_LOOKUP_DOT[1])
    return builder.call(fn, [acc, builder.bitcast(a, i32x16), builder.bitcast(b, i32x16)])


def load_bytes(context, builder: ir.IRBuilder, aryty: types.Array, ary: ir.Value, offset_: ir.Value,
               n: int = 32, lane_order: bool = False) -> ir.Value:
    """``n`` bytes of a uint8 array from element ``offset_``, as ``<n x i8>``; with ``lane_order``
    (32 bytes), reordered within each 16-byte half as :func:`lanes_dot` wants its chunks (byte
    2m + e of a half is byte m + 8e). The decode steps are byte-wise, so reordering the bytes a
    format loads reorders its chunks: one shuffle per load rather than per chunk."""
    v = load(builder, element_ptr(context, builder, aryty, ary, offset_), vec(I8, n))
    if lane_order:
        order = const_vec(I32, _HALF_ORDER + [16 + i for i in _HALF_ORDER])
        v = builder.shuffle_vector(v, ir.Constant(v.type, None), order)
    return v


def bits8(builder: ir.IRBuilder, v: ir.Value, shift: int, mask: int, to: int = 0) -> ir.Value:
    """``((v >> shift) & mask) << to`` on a vector of bytes (``<n x i8>``, logical shifts), as one
    shift and one mask (x86 has no byte shifts: each costs a 16-bit shift and a mask)."""
    n = v.type.count
    if shift > to:
        v = builder.lshr(v, splat_const(I8, shift - to, n))
    elif to > shift:
        v = builder.shl(v, splat_const(I8, to - shift, n))
    return builder.and_(v, splat_const(I8, (mask << to) & 0xFF, n))


def pair_scales(builder: ir.IRBuilder, scales: ir.Value, sub_block_of: Sequence[Sequence[int]], pair: int,
                signed: bool) -> ir.Value:
    """The ``<16 x i16>`` scale vector of chunks 2 * ``pair`` and 2 * ``pair`` + 1 for
    :func:`lanes_dot`: per 128-bit half h, (scale of the first chunk's half h, of the second's) four
    times. ``scales``: ``<n x i8>`` of the block's sub-block scales; ``sub_block_of[t][h]``: the
    sub-block of chunk t's half h."""
    a, b = sub_block_of[2 * pair], sub_block_of[2 * pair + 1]
    picked = pick(builder, scales, [a[0], b[0]] * 4 + [a[1], b[1]] * 4)
    return builder.sext(picked, vec(I16, 16)) if signed else builder.zext(picked, vec(I16, 16))


def lanes_dot(builder: ir.IRBuilder, chunks: Sequence[ir.Value], scales: Sequence[ir.Value],
              quants: Callable[[int], ir.Value], pair_offsets: Callable[[int], ir.Value] | None = None) -> ir.Value:
    """aux32 (``<8 x i32>``) of one block (see above). ``chunks``: 8 ``<32 x i8>`` of unsigned quants,
    chunk t holding weights 32t..32t + 31 in lane order; ``scales``: 4 pair-scale vectors
    (:func:`pair_scales`); ``quants(t)``: chunk t's 32 int8 activation quants, in
    :data:`LANE_Q8_ORDER`; ``pair_offsets(t)``, for quants with an offset: ``<16 x i16>``, the
    quants' offset times the activation quant sum of each of chunk t's byte pairs."""
    sums = []
    for t, chunk in enumerate(chunks):
        s = maddubs(builder, chunk, quants(t))
        if pair_offsets is not None:
            s = builder.sub(s, pair_offsets(t))
        sums.append(s)
    low, high = [], []
    for u in range(4):
        a, b = sums[2 * u], sums[2 * u + 1]
        low.append(madd16(builder, builder.shuffle_vector(a, b, const_vec(I32, _PAIR_LOW)), scales[u]))
        high.append(madd16(builder, builder.shuffle_vector(a, b, const_vec(I32, _PAIR_HIGH)), scales[u]))
    low, high = tree_sum(builder, low), tree_sum(builder, high)
    low = builder.add(pick(builder, low, range(4)), pick(builder, low, range(4, 8)))
    high = builder.add(pick(builder, high, range(4)), pick(builder, high, range(4, 8)))
    return builder.shuffle_vector(low, high, const_vec(I32, range(8)))


def psign(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """x86's psignb on ``<32 x i8>``: ``a[j]`` negated where ``b[j] < 0``, zero where ``b[j] == 0``
    (wrapping: -(-128) is -128)."""
    if PSIGNB is not None:
        fnty = ir.FunctionType(vec(I8, 32), [vec(I8, 32)] * 2)
        return builder.call(cgutils.get_or_insert_function(builder.module, fnty, PSIGNB), [a, b])
    zero = splat_const(I8, 0, 32)
    kept = builder.select(builder.icmp_signed("==", b, zero), zero, a)
    return builder.select(builder.icmp_signed("<", b, zero), builder.sub(zero, a), kept)


DOT_VALUES = ("int8", "signed", "unsigned", "int8 by quants above -128")


def dot32_lanes(builder: ir.IRBuilder, values: ir.Value, quants: ir.Value, kind: str = "int8") -> ir.Value:
    """``<8 x i32>`` lanes whose sum is the exact sum of ``values[j] * quants[j]`` over two
    ``<32 x i8>``, the quants signed. ``kind`` says what the values may be, and so which
    instructions stay exact:

    - ``"int8"``: any int8: both widened to 16 bits, pairs summed by pmaddwd.
    - ``"signed"``: signed, never -128: pmaddubsw of ``|quants|`` (unsigned; 128 for -128) and the
      values with the quants' signs (llama.cpp's sign trick, on the side where it is exact). A pair
      is at most 2 x 128 x 127 in magnitude: no 16-bit saturation.
    - ``"int8 by quants above -128"``: any int8, the quants -127..127 (the caller checks): the sign
      trick the other way round, pmaddubsw of ``|values|`` and the quants with the values' signs.
    - ``"unsigned"``: 0..127: pmaddubsw of the values and the quants (a pair is at most 2 x 127 x
      128). Formats whose values are quants minus an offset (Q4_0's 8, Q5_0's 16; MXFP4's table
      values shifted by 12) dot the quants and subtract the offset times the activation block's
      quant sum (:func:`row_dot_intrinsic`).
    """
    if kind == "int8":
        wide = vec(I16, 32)
        return fold(builder, madd16(builder, builder.sext(values, wide), builder.sext(quants, wide)), 8)
    if kind in ("signed", "int8 by quants above -128"):
        if kind != "signed":
            values, quants = quants, values  # the side that is never -128 takes the signs
        zero = splat_const(I8, 0, 32)
        magnitudes = builder.select(builder.icmp_signed("<", quants, zero), builder.sub(zero, quants), quants)
        return dot_quads(builder, magnitudes, psign(builder, values, quants))
    if kind == "unsigned":
        return dot_quads(builder, values, quants)
    raise ValueError(f"dot32: kind must be one of {DOT_VALUES}, got {kind!r}")


# x86's phaddd on <8 x i32> (pairwise sums within each 128-bit half: a0+a1, a2+a3, b0+b1, b2+b3 |
# a4+a5, a6+a7, b4+b5, b6+b7), as the two shuffles LLVM matches to it.
_HADD_EVEN = [0, 2, 8, 10, 4, 6, 12, 14]
_HADD_ODD = [1, 3, 9, 11, 5, 7, 13, 15]


def hadd(builder: ir.IRBuilder, a: ir.Value, b: ir.Value) -> ir.Value:
    """phaddd on two ``<8 x i32>``: pairwise sums within each 128-bit half (see above)."""
    return builder.add(builder.shuffle_vector(a, b, const_vec(I32, _HADD_EVEN)),
                       builder.shuffle_vector(a, b, const_vec(I32, _HADD_ODD)))


class TransposeSum:
    """:func:`transpose_sum` fed one vector at a time, as a row step makes its lanes: each pairwise
    round is emitted as soon as its two inputs exist (LLVM schedules them as it likes: the Q2_K
    row step's code came out the same size either way)."""

    def __init__(self, builder: ir.IRBuilder) -> None:
        self.builder, self._parts, self._count = builder, [], 0  # (rounds done, vector)

    def add(self, v: ir.Value) -> None:
        if v.type != vec(I32, 8):
            raise ValueError(f"transpose_sum: <8 x i32> vectors, got {v.type}")
        rounds = 0
        while self._parts and self._parts[-1][0] == rounds and rounds < 2:
            v = hadd(self.builder, self._parts.pop()[1], v)
            rounds += 1
        self._parts.append((rounds, v))
        self._count += 1

    def total(self) -> ir.Value:
        """``<n x i32>``, lane k the sum of the k-th vector added (n = 1, 4 or 8 vectors)."""
        b, parts = self.builder, [v for _, v in self._parts]
        if self._count == 1:
            return fold(b, parts[0], 1)
        if self._count == 4:  # [a b c d | a' b' c' d']
            return b.add(pick(b, parts[0], range(4)), pick(b, parts[0], range(4, 8)))
        if self._count == 8:
            low = b.shuffle_vector(parts[0], parts[1], const_vec(I32, [0, 1, 2, 3, 8, 9, 10, 11]))
            high = b.shuffle_vector(parts[0], parts[1], const_vec(I32, [4, 5, 6, 7, 12, 13, 14, 15]))
            return b.add(low, high)
        raise ValueError(f"transpose_sum: 1, 4 or 8 vectors, got {self._count}")


def transpose_sum(builder: ir.IRBuilder, vectors: Sequence[ir.Value]) -> ir.Value:
    """``<n x i32>`` whose lane k is the sum of the 8 lanes of ``vectors[k]`` (n = 1, 4 or 8
    ``<8 x i32>``, as :func:`dot32_lanes` returns them): two rounds of pairwise sums leave, in
    each 128-bit half, one lane per vector; the halves are then added."""
    acc = TransposeSum(builder)
    for v in vectors:
        acc.add(v)
    return acc.total()
