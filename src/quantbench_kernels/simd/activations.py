"""The activation vector moved once per gemv into the order the row dots read it (constant
byte shuffles), and the sums of its quants that the formats with offsets take from their dots."""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .ir import I8, I16, I32, c_array, element_ptr, fold, load, pick, splat, store, vec

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
