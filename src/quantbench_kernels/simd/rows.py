"""A whole row of a gemv in one intrinsic: :func:`row_sums_intrinsic` steps through a row's
blocks 8, 4 and 1 at a time, sums their integer lanes (:class:`RowStep`) and adds their float terms
(:class:`BlockLanes`) in C's order; :func:`row_dot_intrinsic` and :func:`offset_lanes_row_dot` are
its two families (32-weight blocks; the 8-lane k-quants), and
:func:`block32_dequantize_intrinsic` the 32-weight formats' dequantize."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .decoders import f16_header, f16_to_f32
from .dots import DOT_VALUES, TransposeSum, dot32_lanes, hadd, lanes_dot, pair_scales
from .ir import F32, I8, I16, I32, I64, c_array, const_vec, element_ptr, load, offset, pick, splat, splat_const, vec
from .stores import (
    dequantize_intrinsic,
    indexed_dequantize_intrinsic,
    prefetch_ahead,
    store_dequantized,
    store_weights,
    times_float,
)


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

    return row_sums_intrinsic(ScaledLanes(lane_sums, block_bytes, None, lane_weights=256, lane_counts=(1,),
                                           lane_scales=scales))


def offset_lanes_dequantize(decode, block_bytes: int, d_at: int, offset: int,  # type: ignore[no-untyped-def]
                            sub_block_of_chunk: Sequence[Sequence[int]]):
    """``dequantize_one(blocks, out, i, stream)`` (:func:`indexed_dequantize_intrinsic`) of the
    k-quants of :func:`offset_lanes_row_dot`: weight = (d * scale) * (q - ``offset``), d the f16 at
    byte ``d_at``, the block decoded by the same ``decode`` in weight order."""

    def write(context, builder, wt, w_, woff_, ot, out_, ooff_, scales, stream_):  # type: ignore[no-untyped-def]
        chunks, sub_scales = decode(context, builder, wt, w_, woff_, lane_order=False)
        dl = times_float(builder, scales[0], sub_scales, signed=True)
        store_dequantized(context, builder, ot, out_, ooff_, chunks, offset, sub_block_of_chunk, dl, None, stream_)

    return indexed_dequantize_intrinsic(block_bytes, 256, f16_header(d_at), write)


def offset_lanes_kernels(decode, block_bytes: int, d_at: int, offset: int,  # type: ignore[no-untyped-def]
                         sub_block_of_chunk: Sequence[Sequence[int]]):
    """(row_dot, dequantize_one) of an 8-lane k-quant whose quants carry ``offset`` (Q3_K: 4, Q6_K:
    32): :func:`offset_lanes_row_dot` and :func:`offset_lanes_dequantize` of the same block."""
    return (offset_lanes_row_dot(decode, block_bytes, d_at, sub_block_of_chunk),
            offset_lanes_dequantize(decode, block_bytes, d_at, offset, sub_block_of_chunk))


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


@dataclass(frozen=True)
class RowSums:
    """What :func:`row_sums_intrinsic` builds a row dot from, lanes summed one by one:
    ``lane_sums(step, m)`` gives lane m's integer sums, ``terms(lanes, *sums)`` the float terms of
    a step's lanes, ``block_bytes`` per block, ``sub_blocks`` lanes per block (1, 4 or 8),
    ``lane_weights`` quants of ``q8`` per lane, and ``lane_counts`` the lanes a step takes, most
    first (fewer where a lane's work takes many registers). The subclasses add what goes with
    their kind of format, and only that."""

    lane_sums: Callable | None
    block_bytes: int
    terms: Callable | None
    sub_blocks: int = 1
    lane_weights: int = 32
    lane_counts: tuple[int, ...] = LANE_COUNTS

    def __post_init__(self) -> None:
        steps = self.steps()
        if not steps or steps[-1] != 1:
            raise ValueError(f"row sums: sub_blocks must be 1, 4 or 8 and divide a step's lanes "
                             f"{self.lane_counts}, got {self.sub_blocks}")

    def steps(self) -> list[int]:
        """The blocks one step takes, most first."""
        return [count // self.sub_blocks for count in self.lane_counts if count % self.sub_blocks == 0]


@dataclass(frozen=True, kw_only=True)
class ScaledLanes(RowSums):
    """The k-quants' 8-lane dots: C's ``sums[l] += d * aux32[l]`` per block, then ``sumf +=
    sums[l]`` at the row's end. The first sum ``lane_sums`` gives is the block's aux32 itself,
    never summed across; ``lane_scales(lanes)`` gives each block's ``d`` (``<n x float>``) and
    ``terms`` (None if C has no other term) gets the other sums."""

    lane_scales: Callable


@dataclass(frozen=True, kw_only=True)
class WholeSteps(RowSums):
    """A format whose loads span several lanes: ``step_sums(step, n)`` gives the sums of a whole
    step of n lanes at once, ``<n x i32>`` each (lane k: lane k's sum), or None where the step is
    to call ``lane_sums`` lane by lane (None if it never is)."""

    step_sums: Callable


def row_sums_intrinsic(spec: RowSums):  # type: ignore[no-untyped-def]
    """The intrinsic ``row_dot(w, at, nb, q8, acts) -> float32``: C's ``sumf += term`` over the
    ``nb`` blocks from byte ``at`` of ``w`` (uint8, C-contiguous), lane after lane (a lane is a
    block, or with ``sub_blocks`` > 1 a sub-block). ``at`` may be a tuple of up to
    :data:`MAX_ROWS` rows' byte offsets: a tuple of their sums then, each the one-row call's, the
    rows' steps interleaved (``compilation.gemv_rows``), as ``spec`` (:class:`RowSums`,
    :class:`ScaledLanes` or :class:`WholeSteps`) says. Lane m's integer sums are one or more
    ``<8 x i32>`` whose lanes add up to each (``step`` a :class:`RowStep`: ``q8``, int8,
    C-contiguous, holds ``lane_weights`` quants per lane, in the order the format's ``lane_sums``
    reads them; ``acts`` a tuple of C-contiguous arrays, each with the same number of elements per
    block). The float terms come from the ``<n x i32>`` integer sums and a :class:`BlockLanes`
    (their scales in ``w``, the activation's fields), in C's float order lane by lane."""
    steps = spec.steps()
    lane_sums, block_bytes, terms = spec.lane_sums, spec.block_bytes, spec.terms
    sub_blocks, lane_weights = spec.sub_blocks, spec.lane_weights
    lane_scales = spec.lane_scales if isinstance(spec, ScaledLanes) else None
    step_sums = spec.step_sums if isinstance(spec, WholeSteps) else None

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
    return row_sums_intrinsic(WholeSteps(lane_sums, block_bytes, terms, sub_blocks, step_sums=step_sums))


def block32_dequantize_intrinsic(decode, block_bytes: int | None = None, header=None):  # type: ignore[no-untyped-def]
    """The dequantize intrinsic of a 32-weight format (or sub-block): writes ``values * d + m``
    (float32, in that order; no min leaves the products unchanged: ``m = -0.0``) of a block, its
    values decoded by ``decode`` as for :func:`row_dot_intrinsic`, to 32 floats of ``out`` (float32,
    C-contiguous; with ``stream``, non-temporal stores: :func:`store_weights`).

    With ``block_bytes`` and ``header`` (its scales, e.g. :func:`f16_header`), the generated loops'
    ``dequantize_one(blocks, out, i, stream)`` (:func:`indexed_dequantize_intrinsic`); without,
    ``dequantize_block(w, woff, out, ooff, d, m, stream)`` for the block at byte ``woff`` of ``w``
    (uint8, C-contiguous), its d and m given."""

    def write(context, builder, wt, w_, woff_, ot, out_, ooff_, scales, stream_):  # type: ignore[no-untyped-def]
        d_, *m_ = scales
        m_ = m_[0] if m_ else ir.Constant(F32, -0.0)
        values = builder.sitofp(decode(context, builder, wt, w_, woff_), vec(F32, 32))
        weights = builder.fadd(builder.fmul(values, splat(builder, d_, 32)), splat(builder, m_, 32))
        store_weights(builder, [(weights, element_ptr(context, builder, ot, out_, ooff_))], stream_)

    if block_bytes is None:
        return dequantize_intrinsic(2, write)
    return indexed_dequantize_intrinsic(block_bytes, 32, header, write)
