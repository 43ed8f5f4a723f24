"""Helpers for Numba intrinsics that emit LLVM vector IR: the dot-product kernels' block loops.

LLVM does not find the best vector code for the k-quant dot products from scalar loops (it keeps
one accumulator chain and widens too early), so the formats write their per-block integer work
as vector IR with these helpers. The IR is generic (``<64 x i16>`` multiplies, shuffles, adds)
and compiles on any target; one operation, the 16-bit multiply-add of pairs, calls x86's
``pmaddwd`` where the host CPU has it (AVX-512BW or AVX2: LLVM then fuses the additions into
``vpdpwssd`` on VNNI CPUs) and is spelled out in generic IR elsewhere. The dots of unsigned by
signed bytes in fours (:func:`dot_quads`, the 32-weight formats' blocks) take VNNI's ``vpdpbusd``
where the CPU has it (AVX-VNNI or AVX-512 VNNI), else pmaddubsw and
pmaddwd. Q2_K's dots, where the CPU also has AVX-512 VBMI, scale their quants by a 64-entry byte
lookup (:func:`lookup64`, vpermb) and add their products in 512-bit vpdpbusd (:func:`dot_quads64`).
Integer sums are exact, so any grouping gives the same bits; only the float steps, kept in C's
order, decide the result.

``QUANTBENCH_GENERIC_IR=1`` forces the generic spelling, ``QUANTBENCH_NO_VNNI=1`` the AVX2 one on a
VNNI CPU (the tests check both paths); any value but empty or ``0`` counts as set.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
F32 = ir.FloatType()


def _flag(name: str) -> bool:
    """Whether environment variable ``name`` is set to anything but empty or "0"."""
    return os.environ.get(name, "") not in ("", "0")


def _host_features() -> dict | None:
    """The host CPU's features, or None where the generic IR must be used: QUANTBENCH_GENERIC_IR
    set, or Numba compiling for another target (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES, as portable
    caches do: then the host's features say nothing about the target)."""
    if _flag("QUANTBENCH_GENERIC_IR"):
        return None
    if numba_config.CPU_NAME or numba_config.CPU_FEATURES:
        return None
    return dict(llvm.get_host_cpu_features())


def _pmaddwd_intrinsics(features: dict | None) -> list[tuple[str, int]]:
    """(LLVM intrinsic, i16 lanes) of the host's pmaddwd, widest first; empty for the generic IR."""
    out = []
    if features and features.get("avx512bw"):
        out.append(("llvm.x86.avx512.pmaddw.d.512", 32))
    if features and features.get("avx2"):
        out.append(("llvm.x86.avx2.pmadd.wd", 16))
    return out


def _pshufb_intrinsic(features: dict | None) -> str | None:
    """x86's byte shuffle on 256-bit vectors (a 16-entry table lookup per 128-bit half), or None."""
    return "llvm.x86.avx2.pshuf.b" if features and features.get("avx2") else None


def _pmaddubsw_intrinsic(features: dict | None) -> tuple[str, int] | None:
    """(LLVM intrinsic, i8 lanes) of x86's pmaddubsw on 256-bit vectors, or None for the generic IR."""
    if features and features.get("avx2"):
        return "llvm.x86.avx2.pmadd.ub.sw", 32
    return None


def _vpdpbusd_intrinsic(features: dict | None) -> str | None:
    """x86's VNNI dot of unsigned by signed bytes on 256-bit vectors (AVX-VNNI, or AVX-512 VNNI
    with VL), or None."""
    if features and (features.get("avxvnni") or (features.get("avx512vnni") and features.get("avx512vl"))):
        return "llvm.x86.avx512.vpdpbusd.256"
    return None


def _wide_lookup_dot_intrinsics(features: dict | None) -> tuple[str, str] | None:
    """(vpermb, vpdpbusd) on 512-bit vectors: AVX-512 VBMI's 64-entry byte lookup and AVX-512
    VNNI's dot of unsigned by signed bytes, or None where the CPU lacks either."""
    if features and all(features.get(f) for f in ("avx512bw", "avx512vbmi", "avx512vnni")):
        return "llvm.x86.avx512.permvar.qi.512", "llvm.x86.avx512.vpdpbusd.512"
    return None


def _psignb_intrinsic(features: dict | None) -> str | None:
    """x86's psignb on 256-bit vectors (``a`` negated, kept or zeroed by the sign of ``b``), or None."""
    return "llvm.x86.avx2.psign.b" if features and features.get("avx2") else None


_FEATURES = _host_features()
PMADDWDS = _pmaddwd_intrinsics(_FEATURES)
PMADDWD = PMADDWDS[0] if PMADDWDS else None
PMADDUBSW = _pmaddubsw_intrinsic(_FEATURES)
PSHUFB = _pshufb_intrinsic(_FEATURES)
PSIGNB = _psignb_intrinsic(_FEATURES)
VPDPBUSD = None if _flag("QUANTBENCH_NO_VNNI") else _vpdpbusd_intrinsic(_FEATURES)
# QUANTBENCH_NO_VNNI turns this off too: the AVX2 spelling is then what every format runs.
WIDE_LOOKUP_DOT = None if _flag("QUANTBENCH_NO_VNNI") else _wide_lookup_dot_intrinsics(_FEATURES)
# f16 -> f32 in one instruction (vcvtph2ps) where the CPU has F16C; it quiets a signalling NaN
# (sets the top mantissa bit), which the bit-exact checks allow: NaNs compare equal in any payload.
F16C = bool(_FEATURES and _FEATURES.get("f16c"))
# AVX-512's mask registers on 256-bit vectors: a 32-bit word is a <32 x i1> lane mask as it is.
MASK_REGISTERS = bool(_FEATURES and _FEATURES.get("avx512bw") and _FEATURES.get("avx512vl"))
# Part of the kernels' cache stamp: code compiled for one spelling must not be reused for another.
CODEGEN = (f"pmaddwd={PMADDWD[0] if PMADDWD else 'generic'},"
           f"pmaddubsw={PMADDUBSW[0] if PMADDUBSW else 'generic'},"
           f"psignb={PSIGNB or 'generic'},vpdpbusd={VPDPBUSD or 'none'},f16c={F16C},masks={MASK_REGISTERS},"
           f"lookup_dot={'vpermb+vpdpbusd.512' if WIDE_LOOKUP_DOT else 'none'}")


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


# Non-temporal ("streaming") stores of dequantized weights: written past the caches straight to
# memory, with no read of each cache line first (a plain store's read-for-ownership). A large
# output that the caches would not keep anyway then costs half the memory traffic. They need
# 16-byte aligned addresses, and a fence before
# another thread may read what they wrote (:func:`store_fence`).
STREAM_BYTES = 16


def store_weights(builder: ir.IRBuilder, stores: Sequence[tuple[ir.Value, ir.Value]], stream: ir.Value) -> None:
    """Store each float32 vector ``value`` at its ``ptr`` (pairs of ``stores``): plain unaligned
    stores, or with ``stream`` (an i1) non-temporal ones of 4 floats each, the pointers then
    16-byte aligned. One branch for all of them (a block's stores)."""
    with builder.if_else(stream) as (streamed, plain):
        with streamed:
            flag = builder.module.add_metadata([ir.Constant(I32, 1)])
            for value, ptr in stores:
                four = builder.bitcast(ptr, vec(F32, 4).as_pointer())
                for k in range(0, value.type.count, 4):
                    at = builder.gep(four, [ir.Constant(I64, k // 4)])
                    st = builder.store(pick(builder, value, range(k, k + 4)), at, align=STREAM_BYTES)
                    st.set_metadata("nontemporal", flag)
        with plain:
            for value, ptr in stores:
                store(builder, value, ptr)


@intrinsic
def store_fence(typingctx, stream):  # type: ignore[no-untyped-def]
    """``store_fence(stream)``: with ``stream`` true, a full fence, after which the non-temporal
    stores this thread made are visible to the others (x86: mfence); nothing otherwise."""
    if stream != types.boolean:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        with builder.if_then(args[0]):
            builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.none(stream), codegen


def offset(builder: ir.IRBuilder, base: ir.Value, delta: int) -> ir.Value:
    return builder.add(base, ir.Constant(base.type, delta))


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


# ---------------------------------------------------------------------------------------------
# Activations unpacked once per gemv into the order the row dots read them: whole vectors moved,
# a constant shuffle each, where loops of byte gathers were most of a small gemv's fixed cost.
# ---------------------------------------------------------------------------------------------


def _byte_array(ty: types.Type) -> bool:
    return isinstance(ty, types.Array) and ty.layout == "C" and ty.dtype in (types.int8, types.uint8)


def byte_shuffle(order: Sequence[int]):  # type: ignore[no-untyped-def]
    """The intrinsic ``shuffle(src, src_at, dst, dst_at)``: ``dst[dst_at + k] = src[src_at +
    order[k]]`` for k < len(order), of C-contiguous int8 or uint8 arrays of any shape (offsets
    counted in elements from their starts; the caller keeps them inside): one vector load, a
    constant shuffle and one store. ``order``: indices below len(order) (``range(n)`` copies)."""
    order = list(order)
    if not order or any(not 0 <= k < len(order) for k in order):
        raise ValueError(f"byte_shuffle: order must hold indices below its length {len(order)}")

    @intrinsic
    def shuffle(typingctx, src, src_at, dst, dst_at):  # type: ignore[no-untyped-def]
        if not (_byte_array(src) and _byte_array(dst)):
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            src_, src_at_, dst_, dst_at_ = args
            v = load(builder, element_ptr(context, builder, signature.args[0], src_, src_at_), vec(I8, len(order)))
            if order != list(range(len(order))):
                v = pick(builder, v, order)
            store(builder, v, element_ptr(context, builder, signature.args[2], dst_, dst_at_))
            return context.get_dummy_value()

        return types.none(src, src_at, dst, dst_at), codegen

    return shuffle


@intrinsic
def sum32_int8(typingctx, q, at):  # type: ignore[no-untyped-def]
    """The sum of the 32 int8 values ``q[at:at + 32]`` (flat; C-contiguous int8), as int32."""
    if not (isinstance(q, types.Array) and q.layout == "C" and q.dtype == types.int8):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        q_, at_ = args
        v = load(builder, element_ptr(context, builder, signature.args[0], q_, at_), vec(I8, 32))
        total = fold(builder, builder.sext(v, vec(I32, 32)), 1)
        return builder.extract_element(total, ir.Constant(I32, 0))

    return types.int32(q, at), codegen


@intrinsic
def sums16_of_256(typingctx, src, at, dst, dst_at):  # type: ignore[no-untyped-def]
    """The 16 sums of 16 consecutive int8 values each of the 256 bytes ``src[at:at + 256]``
    (C-contiguous int8 or uint8 read as int8), stored as little-endian int16 at byte ``dst_at``
    of ``dst`` (C-contiguous uint8): a Q8_K block's ``bsums`` from its quants."""
    if not (_byte_array(src) and c_array(dst, types.uint8)):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        src_, at_, dst_, dst_at_ = args
        v = builder.sext(load(builder, element_ptr(context, builder, signature.args[0], src_, at_), vec(I8, 256)),
                         vec(I16, 256))
        while v.type.count > 16:  # neighbours added: 128 sums of 2, 64 of 4, ... 16 of 16
            n = v.type.count
            v = builder.add(pick(builder, v, range(0, n, 2)), pick(builder, v, range(1, n, 2)))
        store(builder, v, element_ptr(context, builder, signature.args[2], dst_, dst_at_))
        return context.get_dummy_value()

    return types.none(src, at, dst, dst_at), codegen


@intrinsic
def pair_sums32(typingctx, q, at, out, out_at, times):  # type: ignore[no-untyped-def]
    """``out[out_at + j] = times * (q[at + 2j] + q[at + 2j + 1])`` for j < 16: pairs of int8 values
    (C-contiguous int8) summed, into int16 (C-contiguous; ``times`` at most 128: no overflow)."""
    if not (isinstance(q, types.Array) and q.layout == "C" and q.dtype == types.int8
            and isinstance(out, types.Array) and out.layout == "C" and out.dtype == types.int16
            and isinstance(times, types.Integer)):
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        q_, at_, out_, out_at_, times_ = args
        v = builder.sext(load(builder, element_ptr(context, builder, signature.args[0], q_, at_), vec(I8, 32)),
                         vec(I16, 32))
        pairs = builder.add(pick(builder, v, range(0, 32, 2)), pick(builder, v, range(1, 32, 2)))
        factor = times_ if times_.type.width == 16 else (
            builder.trunc(times_, I16) if times_.type.width > 16 else builder.sext(times_, I16))
        factor = splat(builder, factor, 16)
        store(builder, builder.mul(pairs, factor), element_ptr(context, builder, signature.args[2], out_, out_at_))
        return context.get_dummy_value()

    return types.none(q, at, out, out_at, times), codegen


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


def offset_lanes_row_dot(decode, block_bytes: int, d_at: int, sub_block_of_chunk: Sequence[Sequence[int]]):  # type: ignore[no-untyped-def]
    """The row dot (:func:`row_sums_intrinsic`) of the 8-lane k-quants whose quants carry an offset
    and whose scales are signed (Q3_K, Q6_K): per block, C's ``sums[l] += d * aux32[l]`` with d =
    d(x) * d(y), d(x) the f16 at byte ``d_at``. ``decode(context, builder, wt, w_, at, lane_order)``
    gives the block's 8 chunks and its int8 sub-block scales (``sub_block_of_chunk`` as for
    :func:`pair_scales`); the row's ``q8``: Q8_K quants in :data:`LANE_Q8_ORDER`; acts: (d (nb,)
    float32, psums (nb * 128,) int16: the quants' offset times the pair sums of those quants).
    One block a step: more spill the lanes to the stack."""

    def lane_sums(step: RowStep, m: int) -> list[ir.Value]:
        b = step.builder
        chunks, scales = decode(step.context, b, step.wt, step.w, step.weights_at(m, 0), lane_order=True)
        # |scale * pair sum| fits in 32 bits.
        pair = [pair_scales(b, scales, sub_block_of_chunk, u, signed=True) for u in range(4)]
        return [lanes_dot(b, chunks, pair, lambda t: step.quants(m, 32 * t),
                          lambda t: step.act_at(1, m, 128, 16 * t, 16))]

    def scales(lanes: BlockLanes) -> ir.Value:
        return lanes.builder.fmul(lanes.f16(d_at), lanes.act(0))

    return row_sums_intrinsic(lane_sums, block_bytes, None, lane_weights=256, lane_scales=scales, lane_counts=(1,))


def store_dequantized(context, builder: ir.IRBuilder, outty: types.Array, out: ir.Value, out_at: ir.Value,
                      chunks: Sequence[ir.Value], offset_: int, sub_block_of: Sequence[Sequence[int]],
                      scales: ir.Value, mins: ir.Value | None, stream: ir.Value) -> None:
    """Write one block's 256 weights to float32 ``out`` from element ``out_at``: weight 32t + 16h + l
    is ``scales[j] * (chunks[t][16h + l] - offset_)``, minus ``mins[j]`` if given, with j =
    ``sub_block_of[t][h]``; ``scales`` and ``mins`` are ``<n x float>`` per sub-block (d times the
    sub-block's scale, dmin times its min), so the float steps are C's: one multiply, one subtract.
    ``stream``: non-temporal stores (:func:`store_weights`)."""
    wide = vec(I32, 16)
    for t, chunk in enumerate(chunks):  # a branch per chunk: a block's 256 floats would not fit in registers
        stores = []
        for h in range(2):
            j = ir.Constant(I32, sub_block_of[t][h])
            q = builder.zext(pick(builder, chunk, range(16 * h, 16 * h + 16)), wide)
            if offset_:
                q = builder.sub(q, splat_const(I32, offset_, 16))
            v = builder.fmul(splat(builder, builder.extract_element(scales, j), 16), builder.sitofp(q, vec(F32, 16)))
            if mins is not None:
                v = builder.fsub(v, splat(builder, builder.extract_element(mins, j), 16))
            stores.append((v, element_ptr(context, builder, outty, out, offset(builder, out_at, 32 * t + 16 * h))))
        store_weights(builder, stores, stream)


def times_float(builder: ir.IRBuilder, d: ir.Value, ints: ir.Value, signed: bool) -> ir.Value:
    """``d * (float)ints[j]`` for every lane of an integer vector (float32)."""
    n = ints.type.count
    conv = builder.sitofp if signed else builder.uitofp
    return builder.fmul(splat(builder, d, n), conv(ints, vec(F32, n)))


# How far ahead of the block it reads a dot kernel asks for the weights (1-16 KiB tried: this was
# the fastest).
PREFETCH_BYTES = 4096


def prefetch(context, builder: ir.IRBuilder, aryty: types.Array, ary: ir.Value, offset_: ir.Value) -> None:
    """Ask the CPU to bring ``ary[offset_]``'s cache line in (a hint: never faults, also past the end)."""
    data = context.make_array(aryty)(context, builder, ary).data
    if offset_.type.width < 64:
        offset_ = builder.sext(offset_, I64)
    # An address computed without 'inbounds': past the array's end it is still a valid hint.
    ptr = builder.bitcast(builder.gep(data, [offset_]), ir.IntType(8).as_pointer())
    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), I32, I32, I32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0i8")
    builder.call(fn, [ptr, ir.Constant(I32, 0), ir.Constant(I32, 3), ir.Constant(I32, 1)])


def prefetch_ahead(context, builder: ir.IRBuilder, aryty: types.Array, ary: ir.Value, offset_: ir.Value,
                   nbytes: int) -> None:
    """Prefetch the ``nbytes`` that start :data:`PREFETCH_BYTES` after element ``offset_`` (a dot
    kernel's next blocks: one core's sequential stream is otherwise bound by memory latency)."""
    for k in range(0, nbytes, 64):
        prefetch(context, builder, aryty, ary, offset(builder, offset_, PREFETCH_BYTES + k))


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
        ptr = builder.bitcast(element_ptr(context, builder, signature.args[0], w_, at_), ir.IntType(16).as_pointer())
        return f16_to_f32(builder, builder.load(ptr, align=1))

    return types.float32(w, at), codegen


# A row of 32-weight blocks in one intrinsic. Summing each block's integer lanes on its own costs
# about as much as its dot (a fold, then moving the sum to a scalar register, a float conversion):
# the row steps through 8 blocks at a time instead, sums their lanes together (8 vectors to one,
# lane k holding block k's sum) and computes their float terms as vectors; only the additions to
# the row's sum stay scalar, one per block in C's order. Exact: every lane of a term is computed by
# the same float operations, in the same order, as C's scalar code; integer sums in any grouping.


class BlockLanes:
    """The lanes of one step of :func:`row_dot_intrinsic`, which a format's float terms read: lane
    m is sub-block m % L of block ``b`` + m // L, L sub-blocks per block (1 for the 32-weight
    formats, whose lane m is block ``b`` + m)."""

    def __init__(self, context, builder: ir.IRBuilder, wt: types.Array, w_: ir.Value, at: ir.Value,  # type: ignore[no-untyped-def]
                 block_bytes: int, sub_blocks: int, actty: types.BaseTuple, acts: Sequence[ir.Value], b: ir.Value,
                 n: int) -> None:
        self.context, self.builder, self.n, self.sub_blocks = context, builder, n, sub_blocks
        self._w, self._at, self._block_bytes = (wt, w_), at, block_bytes
        self._acts, self._b = list(zip(actty.types, acts, strict=True)), b

    def _bytes(self, byte: int | Sequence[int], ty: ir.IntType) -> ir.Value:
        """``<n x ty>`` of the little-endian integer at ``byte`` of each lane's block (``byte`` a
        number, or one per sub-block)."""
        wt, w_ = self._w
        b = self.builder
        v = ir.Constant(vec(ty, self.n), None)
        for m in range(self.n):
            within = byte if isinstance(byte, int) else byte[m % self.sub_blocks]
            at = (m // self.sub_blocks) * self._block_bytes + within
            ptr = element_ptr(self.context, b, wt, w_, offset(b, self._at, at))
            v = b.insert_element(v, b.load(b.bitcast(ptr, ty.as_pointer()), align=1), ir.Constant(I32, m))
        return v

    def f16(self, byte: int) -> ir.Value:
        """``<n x float>`` of the f16 at ``byte`` of each lane's block (a scale, a min)."""
        return f16_to_f32(self.builder, self._bytes(byte, I16))

    def f16_pair(self, byte: int) -> tuple[ir.Value, ir.Value]:
        """The f16 at ``byte`` and the one after it (Q4_1's and Q5_1's d and m) of each lane's block,
        ``<n x float>`` each, from one 32-bit load per lane."""
        b = self.builder
        both = self._bytes(byte, I32)
        low = b.trunc(both, vec(I16, self.n))
        high = b.trunc(b.lshr(both, splat_const(I32, 16, self.n)), vec(I16, self.n))
        return f16_to_f32(b, low), f16_to_f32(b, high)

    def u8(self, byte: int | Sequence[int]) -> ir.Value:
        """``<n x i32>`` of the byte at ``byte`` of each lane's block (MXFP4's exponent, IQ4_XS's
        scale bits: ``byte`` one per sub-block)."""
        return self.builder.zext(self._bytes(byte, I8), vec(I32, self.n))

    def u16(self, byte: int) -> ir.Value:
        """``<n x i32>`` of the little-endian u16 at ``byte`` of each lane's block."""
        return self.builder.zext(self._bytes(byte, I16), vec(I32, self.n))

    def act(self, i: int) -> ir.Value:
        """``<n x T>`` of each lane's block's element of activation array ``i`` of ``acts``."""
        aryty, ary = self._acts[i]
        ptr = element_ptr(self.context, self.builder, aryty, ary, self._b)
        blocks = load(self.builder, ptr, vec(self.context.get_data_type(aryty.dtype), self.n // self.sub_blocks))
        if self.sub_blocks == 1:
            return blocks
        return pick(self.builder, blocks, [m // self.sub_blocks for m in range(self.n)])

    def sub_block(self) -> ir.Value:
        """``<n x i32>`` of each lane's sub-block index, 0..L - 1."""
        return const_vec(I32, [m % self.sub_blocks for m in range(self.n)])

    def float(self, ints: ir.Value) -> ir.Value:
        """C's ``(float)`` of an ``<n x i32>``."""
        return self.builder.sitofp(ints, vec(F32, self.n))

    def splat(self, ty: ir.Type, value: int | float) -> ir.Constant:
        return splat_const(ty, value, self.n)

    def less_offset(self, sums: ir.Value, offset_: int, i: int) -> ir.Value:
        """The integer dots of values that are quants minus ``offset_`` (Q4_0, Q5_0, MXFP4's shifted
        table values), from ``sums``, the quants' dots: less ``offset_`` times each block's sum of
        its activation quants, activation array ``i`` (``q8_0.quant_sums``)."""
        return self.builder.sub(sums, self.builder.mul(self.act(i), self.splat(I32, offset_)))


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


LANE_COUNTS = (8, 4, 1)  # the sub-blocks one step takes, most first (what transpose_sum sums)
MAX_ROWS = 2  # rows one row dot takes at once (``at`` a tuple; compilation.gemv_rows takes two)


class RowStep:
    """What a :func:`row_sums_intrinsic` step's ``lane_sums`` reads: lane m's (sub-)block in the
    weights and its activation quants and fields. Lane m is sub-block m % L of block ``b`` + m // L,
    L sub-blocks per block; a lane multiplies ``lane_weights`` activation quants."""

    def __init__(self, context, builder: ir.IRBuilder, wt: types.Array, w_: ir.Value,  # type: ignore[no-untyped-def]
                 block_at: ir.Value, block_bytes: int, sub_blocks: int, qt: types.Array, q8_: ir.Value,
                 lane_weights: int, actty: types.BaseTuple, acts: Sequence[ir.Value], b: ir.Value) -> None:
        self.context, self.builder, self.wt, self.w = context, builder, wt, w_
        self.block_at, self.block_bytes, self.sub_blocks = block_at, block_bytes, sub_blocks
        self._q, self._lane_weights, self._b = (qt, q8_), lane_weights, b
        self._acts = list(zip(actty.types, acts, strict=True))

    def weights_at(self, m: int, within: int) -> ir.Value:
        """The byte of ``w`` at ``within`` of lane m's block (``within`` counts from the block's start)."""
        return offset(self.builder, self.block_at, (m // self.sub_blocks) * self.block_bytes + within)

    def quants(self, m: int, k: int = 0, n: int = 32) -> ir.Value:
        """``<n x i8>``: lane m's activation quants from its k-th."""
        qt, q8_ = self._q
        first = self.builder.mul(self._b, ir.Constant(I64, self._lane_weights * self.sub_blocks))
        at = offset(self.builder, first, self._lane_weights * m + k)
        return load(self.builder, element_ptr(self.context, self.builder, qt, q8_, at), vec(I8, n))

    def act_at(self, i: int, m: int, per_block: int, k: int = 0, n: int | None = None) -> ir.Value:
        """``<n x T>``: elements k .. k + n - 1 of block ``b`` + m's ``per_block`` elements of
        activation array ``i`` (n = ``per_block`` if not given)."""
        aryty, ary = self._acts[i]
        first = self.builder.mul(self.builder.add(self._b, ir.Constant(I64, m)), ir.Constant(I64, per_block))
        return load(self.builder, element_ptr(self.context, self.builder, aryty, ary, offset(self.builder, first, k)),
                    vec(self.context.get_data_type(aryty.dtype), per_block if n is None else n))


def row_sums_intrinsic(lane_sums, block_bytes: int, terms, sub_blocks: int = 1,  # type: ignore[no-untyped-def]
                       lane_weights: int = 32, lane_scales=None, lane_counts: Sequence[int] = LANE_COUNTS,
                       step_sums=None):
    """The intrinsic ``row_dot(w, at, nb, q8, acts) -> float32``: C's ``sumf += term`` over the
    ``nb`` blocks from byte ``at`` of ``w`` (uint8, C-contiguous), lane after lane (a lane is a
    block, or with ``sub_blocks`` > 1 a sub-block). ``at`` may be a tuple of up to
    :data:`MAX_ROWS` rows' byte offsets: a tuple of their sums then, each the one-row call's, the
    rows' steps interleaved (``compilation.gemv_rows``). ``lane_sums(step, m)`` gives lane m's integer
    sums (one or more, each an ``<8 x i32>`` whose lanes add up to it; ``step`` a
    :class:`RowStep`: ``q8``, int8, C-contiguous, holds ``lane_weights`` quants per lane, in the
    order the format's ``lane_sums`` reads them; ``acts`` a tuple of C-contiguous arrays, each
    with the same number of elements per block). ``terms(lanes, *sums)`` makes the float terms of
    a step's lanes from their ``<n x i32>`` integer sums and a :class:`BlockLanes` (their scales in
    ``w``, the activation's fields), in C's float order lane by lane. A step takes 8 lanes where it
    can, then 4, then one (``lane_counts``: fewer where a lane's work takes many registers);
    ``sub_blocks`` is 1, 4 or 8.

    With ``lane_scales`` (the k-quants' 8-lane dots: C's ``sums[l] += d * aux32[l]`` per block, then
    ``sumf += sums[l]`` at the row's end), the first sum ``lane_sums`` gives is the block's aux32
    itself, never summed across: ``lane_scales(lanes)`` gives each block's ``d`` (``<n x float>``)
    and ``terms`` (None if C has no other term) gets the other sums.

    ``step_sums(step, n)``, for a format whose loads span several lanes: the sums of a whole step
    of n lanes at once, ``<n x i32>`` each (lane k: lane k's sum), or None where the step is to call
    ``lane_sums`` lane by lane (None if it never is); not with ``lane_scales``."""
    steps = [count // sub_blocks for count in lane_counts if count % sub_blocks == 0]

    @intrinsic
    def row_dot(typingctx, w, at, nb, q8, acts):  # type: ignore[no-untyped-def]
        if not (c_array(w, types.uint8) and c_array(q8, types.int8) and isinstance(acts, types.BaseTuple)
                and all(isinstance(t, types.Array) and t.layout == "C" for t in acts.types)):
            return None
        if isinstance(at, types.Integer):
            sig = types.float32(w, at, nb, q8, acts)
        elif isinstance(at, types.UniTuple) and isinstance(at.dtype, types.Integer) and 1 <= len(at) <= MAX_ROWS:
            sig = types.UniTuple(types.float32, len(at))(w, at, nb, q8, acts)
        else:
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            wt, att, nbt, qt, actty = signature.args
            w_, q8_ = args[0], args[3]
            if isinstance(att, types.Integer):
                ats = [context.cast(builder, args[1], att, types.intp)]
            else:
                ats = [context.cast(builder, a, att.dtype, types.intp) for a in cgutils.unpack_tuple(builder, args[1])]
            nb_ = context.cast(builder, args[2], nbt, types.intp)
            acts_ = cgutils.unpack_tuple(builder, args[4], len(actty))
            sums_f = [cgutils.alloca_once_value(builder, ir.Constant(F32, 0.0)) for _ in ats]
            lanes8s = [cgutils.alloca_once_value(builder, ir.Constant(vec(F32, 8), [0.0] * 8)) for _ in ats]

            def step(b: ir.Value, blocks: int) -> None:
                """Blocks b .. b + blocks - 1 of each row into its sum."""
                for at_, sumf, lanes8 in zip(ats, sums_f, lanes8s, strict=True):
                    row_step(b, blocks, at_, sumf, lanes8)

            def row_step(b: ir.Value, blocks: int, at_: ir.Value, sumf: ir.Value, lanes8: ir.Value) -> None:
                """Blocks b .. b + blocks - 1 of the row at byte ``at_`` into ``sumf``."""
                block_at = builder.add(at_, builder.mul(b, ir.Constant(I64, block_bytes)))
                prefetch_ahead(context, builder, wt, w_, block_at, blocks * block_bytes)
                row = RowStep(context, builder, wt, w_, block_at, block_bytes, sub_blocks, qt, q8_, lane_weights,
                              actty, acts_, b)
                n = blocks * sub_blocks
                view = BlockLanes(context, builder, wt, w_, block_at, block_bytes, sub_blocks, actty, acts_, b, n)
                d = lane_scales(view) if lane_scales is not None else None
                whole = step_sums(row, n) if step_sums is not None else None
                sums: list[TransposeSum] = []
                for m in range(0 if whole is not None else n):
                    lane = lane_sums(row, m)
                    if d is not None:  # sums[l] += d * (float)aux32[l], block after block
                        dm = splat(builder, builder.extract_element(d, ir.Constant(I32, m)), 8)
                        scaled = builder.fmul(dm, builder.sitofp(lane[0], vec(F32, 8)))
                        builder.store(builder.fadd(builder.load(lanes8), scaled), lanes8)
                        lane = lane[1:]
                    sums = sums or [TransposeSum(builder) for _ in lane]
                    for acc, v in zip(sums, lane, strict=True):
                        acc.add(v)
                if terms is None:
                    return
                t = terms(view, *(whole if whole is not None else [acc.total() for acc in sums]))
                total = builder.load(sumf)
                for m in range(n):
                    total = builder.fadd(total, builder.extract_element(t, ir.Constant(I32, m)))
                builder.store(total, sumf)

            start = cgutils.alloca_once_value(builder, ir.Constant(I64, 0))
            for blocks in steps:
                first = builder.load(start)
                count = builder.sdiv(builder.sub(nb_, first), ir.Constant(I64, blocks))
                with cgutils.for_range(builder, count) as loop:
                    step(builder.add(first, builder.mul(loop.index, ir.Constant(I64, blocks))), blocks)
                builder.store(builder.add(first, builder.mul(count, ir.Constant(I64, blocks))), start)
            totals = []
            for sumf, lanes8 in zip(sums_f, lanes8s, strict=True):
                total = builder.load(sumf)
                if lane_scales is not None:
                    lanes = builder.load(lanes8)
                    for lane in range(8):
                        total = builder.fadd(total, builder.extract_element(lanes, ir.Constant(I32, lane)))
                totals.append(total)
            if isinstance(att, types.Integer):
                return totals[0]
            return context.make_tuple(builder, signature.return_type, totals)

        return sig, codegen

    if not steps or steps[-1] != 1:
        raise ValueError(f"row_sums_intrinsic: sub_blocks must be 1, 4 or 8, got {sub_blocks}")
    if step_sums is not None and lane_scales is not None:
        raise ValueError("row_sums_intrinsic: a step's sums at once (step_sums) leave no lane to scale (lane_scales)")
    return row_dot


def row_dot_intrinsic(decode, block_bytes: int, kind: str, terms, sub_blocks: int = 1,  # type: ignore[no-untyped-def]
                      sub_block_at: int = 0, sub_block_bytes: int = 0, decode_pair=None):
    """:func:`row_sums_intrinsic` for a format of 32-weight blocks or sub-blocks, whose integer sum
    is its ``decode``d values (of the ``kind`` :func:`dot32_lanes` says; ``decode(context,
    builder, wt, w_, woff_)``, the sub-block at byte ``woff_``) times its 32 int8 quants of ``q8``
    (in weight order). ``sub_blocks`` per block (1, 4 or 8), sub-block k at byte ``sub_block_at +
    k * sub_block_bytes`` of its block; ``terms(lanes, sums)`` as there.

    ``decode_pair(context, builder, wt, w_, at_a, at_b)`` (:func:`nibble_decoders`), for blocks of
    16 bytes of nibbles: two blocks' values at once (their first 16 weights each, then their last
    16; see :data:`PAIR_ORDER`), which the steps of 8 and 4 blocks take (the single blocks at a
    row's end take ``decode``). The activation quants of a row's first 4 * (nb // 4) blocks are
    then in :data:`PAIR_ORDER`, pair by pair (``q8_0.in_pairs``)."""

    def lane_sums(step: RowStep, m: int) -> list[ir.Value]:
        within = sub_block_at + (m % sub_blocks) * sub_block_bytes
        values = decode(step.context, step.builder, step.wt, step.w, step.weights_at(m, within))
        return [dot32_lanes(step.builder, values, step.quants(m), kind)]

    def step_sums(step: RowStep, n: int) -> list[ir.Value] | None:
        if decode_pair is None or n == 1:
            return None
        b = step.builder
        pairs = []
        for p in range(n // 2):  # lanes 0-3 of each: block 2p, lanes 4-7: 2p + 1
            first, last = decode_pair(step.context, b, step.wt, step.w, step.weights_at(2 * p, 0),
                                      step.weights_at(2 * p + 1, 0))
            pairs.append(b.add(dot32_lanes(b, first, step.quants(2 * p), kind),
                               dot32_lanes(b, last, step.quants(2 * p, 32), kind)))
        if n == 8:  # two rounds of pairwise sums: blocks [0 2 4 6 | 1 3 5 7]
            mixed = hadd(b, hadd(b, pairs[0], pairs[1]), hadd(b, pairs[2], pairs[3]))
            return [pick(b, mixed, [0, 4, 1, 5, 2, 6, 3, 7])]
        once = hadd(b, pairs[0], pairs[1])  # n == 4: [0 0 2 2 | 1 1 3 3], then [0 2 0 2 | 1 3 1 3]
        return [pick(b, hadd(b, once, once), [0, 4, 1, 5])]

    if kind not in DOT_VALUES:
        raise ValueError(f"row_dot_intrinsic: kind must be one of {DOT_VALUES}, got {kind!r}")
    if sub_blocks not in (1, 4, 8):
        raise ValueError(f"row_dot_intrinsic: sub_blocks must be 1, 4 or 8, got {sub_blocks}")
    if decode_pair is not None and (sub_blocks != 1 or kind == "int8"):
        raise ValueError("row_dot_intrinsic: pairs of blocks need whole blocks and values whose dot keeps each "
                         f"128-bit half's lanes apart (not 'int8'), got {sub_blocks} sub-blocks of {kind!r}")
    return row_sums_intrinsic(lane_sums, block_bytes, terms, sub_blocks, step_sums=step_sums)


def block32_dequantize_intrinsic(decode):  # type: ignore[no-untyped-def]
    """The intrinsic ``dequantize_block(w, woff, out, ooff, d, m, stream)`` of a 32-weight format:
    writes ``values * d + m`` (float32, in that order; ``m = -0.0`` leaves the products unchanged)
    of the block at byte ``woff`` of ``w`` (uint8, C-contiguous) to ``out[ooff:ooff + 32]``
    (float32, C-contiguous; with ``stream``, non-temporal stores: :func:`store_weights`), the values
    decoded by ``decode`` as for :func:`row_dot_intrinsic`."""

    @intrinsic
    def dequantize_block(typingctx, w, woff, out, ooff, d, m, stream):  # type: ignore[no-untyped-def]
        if not (c_array(w, types.uint8) and c_array(out, types.float32) and d == types.float32
                and m == types.float32 and stream == types.boolean):
            return None
        sig = types.none(w, woff, out, ooff, d, m, stream)

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            w_, woff_, out_, ooff_, d_, m_, stream_ = args
            wt, _, ot, _, _, _, _ = signature.args
            values = builder.sitofp(decode(context, builder, wt, w_, woff_), vec(F32, 32))
            weights = builder.fadd(builder.fmul(values, splat(builder, d_, 32)), splat(builder, m_, 32))
            store_weights(builder, [(weights, element_ptr(context, builder, ot, out_, ooff_))], stream_)
            return context.get_dummy_value()

        return sig, codegen

    return dequantize_block


# ---------------------------------------------------------------------------------------------
# A block's extreme value, as C's sequential loops find it (``if (v > best) best = v``: the first
# element to reach the extreme wins ties, NaN never wins), for the 32-weight quantizers. A vector
# max/min in any order gives the extreme's value; the first element equal to it (a compare mask
# and a count of trailing zeros) gives the element, so the sign of a zero is C's too.
# ---------------------------------------------------------------------------------------------

EXTREMES = ("largest", "min", "max", "magnitude")


def fabs(builder: ir.IRBuilder, v: ir.Value) -> ir.Value:
    """``|v|`` of a ``<n x float>``: the sign bits cleared (NaN stays NaN)."""
    ints = vec(I32, v.type.count)
    return builder.bitcast(builder.and_(builder.bitcast(v, ints), splat_const(I32, 0x7FFFFFFF, v.type.count)), v.type)


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
