"""Writing dequantized weights and reading ahead: streaming (non-temporal) stores past the
caches, the fence after them, ``store_dequantized`` (values times scale plus min, in C's float
order), and the prefetch of the weights a row dot reads next."""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .ir import F32, I32, I64, c_array, element_ptr, offset, pick, splat, splat_const, store, vec

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


def dequantize_intrinsic(scales: int, write):  # type: ignore[no-untyped-def]
    """The intrinsic ``dequantize_block(w, woff, out, ooff, d, stream)`` (``scales`` 1) or
    ``dequantize_block(w, woff, out, ooff, d, m, stream)`` (``scales`` 2: a second float, the min or
    dmin) of a format: the block at byte ``woff`` of ``w`` (uint8, C-contiguous) into float32 ``out``
    (C-contiguous) from element ``ooff``, given the float32 scales decoded from its header.
    ``write(context, builder, wt, w_, woff_, ot, out_, ooff_, scales_, stream_)`` emits the
    block's stores (``scales_`` the list of scale values; ``stream_``: non-temporal stores, see
    :func:`store_weights`)."""

    def typed(w, out, floats, stream, signature_args):  # type: ignore[no-untyped-def]
        if not (c_array(w, types.uint8) and c_array(out, types.float32) and stream == types.boolean
                and all(f == types.float32 for f in floats)):
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            wt, _, ot = signature.args[:3]
            write(context, builder, wt, args[0], args[1], ot, args[2], args[3], list(args[4:-1]), args[-1])
            return context.get_dummy_value()

        return types.none(*signature_args), codegen

    if scales == 1:
        @intrinsic
        def dequantize_block(typingctx, w, woff, out, ooff, d, stream):  # type: ignore[no-untyped-def]
            return typed(w, out, [d], stream, (w, woff, out, ooff, d, stream))
    elif scales == 2:
        @intrinsic
        def dequantize_block(typingctx, w, woff, out, ooff, d, m, stream):  # type: ignore[no-untyped-def]
            return typed(w, out, [d, m], stream, (w, woff, out, ooff, d, m, stream))
    else:
        raise ValueError(f"dequantize_intrinsic: a block has 1 or 2 float scales, got {scales}")
    return dequantize_block


def indexed_dequantize_intrinsic(block_bytes: int, block_weights: int, header, write):  # type: ignore[no-untyped-def]
    """The intrinsic ``dequantize_one(blocks, out, i, stream)`` of a format: block ``i`` of
    ``blocks`` (uint8 (n_blocks, ``block_bytes``), C-contiguous) into ``out`` (float32,
    C-contiguous) from element ``i * block_weights``. ``header(context, builder, wt, w_, woff_)``
    gives the block's float32 scales (IR values) from its bytes; ``write`` as for
    :func:`dequantize_intrinsic`. What the generated loops call (``compilation.Loops``)."""

    @intrinsic
    def dequantize_one(typingctx, blocks, out, i, stream):  # type: ignore[no-untyped-def]
        if not (c_array(blocks, types.uint8) and c_array(out, types.float32) and isinstance(i, types.Integer)
                and stream == types.boolean):
            return None

        def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
            wt, ot, it, _ = signature.args
            blocks_, out_, i_, stream_ = args
            index = context.cast(builder, i_, it, types.int64)
            woff_ = builder.mul(index, ir.Constant(I64, block_bytes))
            ooff_ = builder.mul(index, ir.Constant(I64, block_weights))
            scales = header(context, builder, wt, blocks_, woff_)
            write(context, builder, wt, blocks_, woff_, ot, out_, ooff_, scales, stream_)
            return context.get_dummy_value()

        return types.none(blocks, out, i, stream), codegen

    return dequantize_one
