"""Q8_K: 256 values in 292 bytes, the activation format of k-quant dot products.

::

    offset  size  field
         0     4  d       f32, scale
         4   256  qs      int8 quants, value = d * q
       260    32  bsums   int16[16], sum of each 16 consecutive quants (for the mins term)

As ``quantize_row_q8_K_ref``: ``iscale = -127 / max`` where ``max`` is the first value of largest
magnitude, ``q = min(127, nearest_int(iscale * x))`` and ``d = 1 / iscale``. An all-zero block gets
``d = 0`` and zero quants; llama.cpp leaves its ``bsums`` unset, here they are zero.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import Loops, activation_blocks, inline, jit
from ..jitmath import F32, bits_float, float_bits, nearest_int
from ..registry import BlockFormat, DotTerms, Ops

BLOCK_DTYPE = np.dtype([("d", "<f4"), ("qs", "i1", 256), ("bsums", "<i2", 16)])
QK = 256
BLOCK_BYTES = BLOCK_DTYPE.itemsize  # 292


def fields_ref(blocks: np.ndarray) -> np.ndarray:
    """The structured view (fields d, qs, bsums) of uint8 (n_blocks, 292) Q8_K blocks."""
    return blocks.view(BLOCK_DTYPE)[:, 0]


def fill_bsums(blocks: np.ndarray) -> None:
    """Set ``bsums`` of structured Q8_K blocks to the sums of their quants, in place."""
    blocks["bsums"] = blocks["qs"].reshape(-1, 16, 16).astype(np.int32).sum(axis=2)


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 292) -> ``out``, float32 (n_blocks, 256)."""
    b = fields_ref(blocks)
    out[...] = b["d"][:, None] * b["qs"]


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 256) -> uint8 (n_blocks, 292)."""
    n = x.shape[0]
    first_largest = np.argmax(np.abs(x), axis=1)  # the first index wins ties, as C's strict '>'
    amax = np.abs(x[np.arange(n), first_largest])
    with np.errstate(all="ignore"):
        iscale = F32(-127) / x[np.arange(n), first_largest]
        # C assigns MIN(127, v) to an int8_t: out-of-range values wrap (only for subnormal maxima).
        q = np.minimum(refmath.nearest_int(iscale[:, None] * x), 127).astype(np.int8)
        d = F32(1) / iscale
    zero = amax == 0
    q[zero] = 0
    out = np.zeros(n, dtype=BLOCK_DTYPE)
    out["d"] = np.where(zero, F32(0), d)
    out["qs"] = q
    fill_bsums(out)
    return out.view(np.uint8).reshape(n, BLOCK_DTYPE.itemsize)


def lane_sums_ref(q: np.ndarray, scales: np.ndarray, act: np.ndarray) -> np.ndarray:
    """The integer part of llama.cpp's 8-lane k-quant dots (Q3_K..Q6_K): for each row and block,
    ``aux32[l]`` = the sum of scale(w) * q(w) * q8(w) over the block's weights w with w % 8 == l.

    ``q`` and ``scales``: integers (rows, nb, 256), each weight's quant and its sub-block's scale;
    ``act``: uint8 (nb, 292) Q8_K blocks. Returns int64 (rows, nb, 8), exact."""
    q8 = fields_ref(act)["qs"].astype(np.int64)
    prod = q.astype(np.int64) * scales.astype(np.int64) * q8
    return prod.reshape(prod.shape[0], prod.shape[1], 32, 8).sum(axis=2)


def accumulate_lanes_ref(d: np.ndarray, aux32: np.ndarray, dmin: np.ndarray | None = None,
                         sumi: np.ndarray | None = None) -> np.ndarray:
    """The float part of those dots, in C's order: per block ``sums[l] += d * aux32[l]`` (and
    ``sumf -= dmin * sumi`` for formats with mins), then ``sumf += sums[l]`` for l = 0..7.

    ``d``, ``dmin``: float32 (rows, nb), the block's scale times the activations' d; ``aux32``:
    (rows, nb, 8); ``sumi``: (rows, nb), the mins times the Q8_K bsums. Returns float32 (rows,)."""
    rows, nb = d.shape
    sums = np.zeros((rows, 8), dtype=np.float32)
    sumf = np.zeros(rows, dtype=np.float32)
    with np.errstate(all="ignore"):
        for i in range(nb):
            sums = sums + d[:, i, None] * aux32[:, i].astype(np.float32)
            if dmin is not None:
                sumf = sumf - dmin[:, i] * sumi[:, i].astype(np.float32)
        for lane in range(8):
            sumf = sumf + sums[:, lane]
    return sumf


def lanes_gemv_ref(act: np.ndarray, q: np.ndarray, scales: np.ndarray, d: np.ndarray,
                   mins: np.ndarray | None = None, dmin: np.ndarray | None = None) -> np.ndarray:
    """llama.cpp's generic 8-lane k-quant dots (Q3_K..Q6_K) from a format's dot parts, taken as
    :func:`dot_terms_ref` takes them: the lane sums, the mins times the Q8_K ``bsums`` (each min
    holds for 16 weights at least) and the float accumulation in C's order. float32 (rows,)."""
    y = fields_ref(act)
    aux32 = lane_sums_ref(q, scales, act)
    with np.errstate(all="ignore"):
        if mins is None:
            return accumulate_lanes_ref(d * y["d"], aux32)
        sumi = (y["bsums"].astype(np.int32) * mins[..., ::16]).sum(axis=-1)
        return accumulate_lanes_ref(d * y["d"], aux32, dmin * y["d"], sumi)


def dot_terms_ref(act: np.ndarray, q: np.ndarray, scales: np.ndarray, d: np.ndarray,
                  mins: np.ndarray | None = None, dmin: np.ndarray | None = None, offset: int = 0) -> DotTerms:
    """The exact parts of k-quant dot products (see :class:`DotTerms`): per block, ``d * yd``
    times the sum of scale(w) * q(w) * q8(w), and ``-dmin * yd`` times the sum of min(w) * q8(w)
    (what llama.cpp computes as the mins times the Q8_K ``bsums``).

    ``q``, ``scales``, ``mins``: integers (rows, nb, 256), each weight's quant (signed, its
    ``offset`` already taken off) and its sub-block's scale and min; ``d``, ``dmin``: (rows, nb)
    the weight blocks' float16 scales; ``act``: uint8 (nb, 292) Q8_K blocks. A kernel may multiply
    the stored (unsigned) quant and the offset separately (llama.cpp's SIMD Q3_K and Q6_K dots do),
    so each weight's magnitude is |scale * q8| * (|q| + offset), which bounds both products. Terms
    are (rows, nb) or, with mins, (rows, 2 * nb)."""
    y = fields_ref(act)
    q8 = y["qs"].astype(np.int64)
    yd = y["d"].astype(np.float64)
    q = q.astype(np.int64)
    scaled = scales.astype(np.int64) * q8
    parts = [(d, scaled * q, np.abs(scaled) * (np.abs(q) + offset))]
    if mins is not None:
        prod = mins.astype(np.int64) * q8
        parts.append((-dmin.astype(np.float64), prod, np.abs(prod)))
    return DotTerms(
        coef=np.concatenate([scale.astype(np.float64) * yd for scale, _, _ in parts], axis=-1),
        ints=np.concatenate([prod.sum(axis=-1) for _, prod, _ in parts], axis=-1),
        abs_ints=np.concatenate([magnitude.sum(axis=-1) for _, _, magnitude in parts], axis=-1),
    )


def lanes_dots_ref(dot_parts_ref: Callable[[np.ndarray], tuple[np.ndarray, ...]], offset: int = 0,
                   ) -> tuple[Callable[..., np.ndarray], Callable[..., DotTerms]]:
    """(gemv_ref, dot_terms_ref) of an 8-lane k-quant (Q3_K..Q6_K) whose ``dot_parts_ref(w)`` gives
    its dot parts as :func:`dot_terms_ref` takes them, its quants stored plus ``offset``:
    :func:`lanes_gemv_ref` (C's ``sums[l] += d * aux32[l]``, and ``sumf -= dmin * sumi`` with
    mins, block after block, then ``sumf += sums[l]`` for l = 0..7) and :func:`dot_terms_ref`."""

    def gemv_ref(w: np.ndarray, act: np.ndarray, threads: int | None = None) -> np.ndarray:
        return lanes_gemv_ref(act, *dot_parts_ref(w))

    def terms_ref(w: np.ndarray, act: np.ndarray) -> DotTerms:
        return dot_terms_ref(act, *dot_parts_ref(w), offset=offset)

    return gemv_ref, terms_ref


@inline
def read_d(blk: np.ndarray) -> np.float32:
    """The float32 ``d`` of one Q8_K block (uint8[292]), little-endian."""
    return bits_float(np.int32(np.int32(blk[0]) | (np.int32(blk[1]) << 8) | (np.int32(blk[2]) << 16)
                               | (np.int32(blk[3]) << 24)))


# The orders the row dots read a block's 256 quants in, as ``simd.byte_shuffle`` intrinsics that
# move one block's quants into that order: in weight order, and in the 8-lane dots' (``simd.lanes_dot``).
IN_WEIGHT_ORDER = simd.byte_shuffle(range(QK))
IN_LANE_ORDER = simd.byte_shuffle(simd.LANE_Q8_ORDER)


@inline
def unpack(x: np.ndarray, in_order) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """What the row dots (``simd.row_sums_intrinsic``) read from uint8 (nb, 292) Q8_K blocks, or
    float32 values that :data:`blocks` quantizes first, decoded once per vector: (d float32 (nb,),
    qs int8 (nb * 256,), each block's quants moved into an order by ``in_order`` (a
    ``simd.byte_shuffle`` of 256 bytes: :data:`IN_WEIGHT_ORDER`, :data:`IN_LANE_ORDER`, IQ4_XS's
    pairs), bsums int16 (nb, 16))."""
    act = blocks(x)
    nb = act.shape[0]
    d = np.empty(nb, dtype=np.float32)
    qs = np.empty(nb * QK, dtype=np.int8)
    bsums = np.empty((nb, 16), dtype=np.int16)
    for i in range(nb):
        blk = act[i]
        d[i] = read_d(blk)
        in_order(act, i * BLOCK_BYTES + 4, qs, i * QK)
        for g in range(16):
            bsums[i, g] = np.int16(np.int32(blk[260 + 2 * g]) | (np.int32(blk[261 + 2 * g]) << 8))
    return d, qs, bsums


@inline
def unpack_for_lanes(x: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What the 8-lane dot kernels (``simd.lanes_dot``) read: :func:`unpack` in the lanes' order
    (:data:`IN_LANE_ORDER`), and psums int16 (nb*128,): ``offset`` (the weight format's quant
    offset, 0..32) times the sum of each pair of consecutive quants of that order. (d, qs, psums, bsums).
    Compiled once per input type for every format: the callers' literal offsets become an int64."""
    return _unpack_for_lanes(x, np.int64(offset))


@jit
def _unpack_for_lanes(x: np.ndarray, offset: np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    d, qs, bsums = unpack(x, IN_LANE_ORDER)
    psums = np.empty(qs.size // 2, dtype=np.int16)
    for j in range(qs.size // 32):
        simd.pair_sums32(qs, 32 * j, psums, 16 * j, offset)
    return d, qs, psums, bsums


@inline
def _store_f32(blk: np.ndarray, v: np.float32) -> None:
    bits = float_bits(v)
    for k in range(4):
        blk[k] = (bits >> (8 * k)) & 0xFF


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray) -> None:
    # C's ``if (ax > amax) { amax = ax; max = x[j]; }`` over the block.
    vmax = simd.first_largest256(x, 0)
    amax = abs(vmax)
    if amax == 0:  # an all-zero block; otherwise each of its bytes is written below
        for k in range(blk.shape[0]):
            blk[k] = 0
        return
    iscale = F32(-127) / vmax
    for j in range(QK):  # one loop of its own, so that LLVM vectorises it
        blk[4 + j] = np.uint8(np.int8(min(127, nearest_int(iscale * x[j]))))
    simd.sums16_of_256(blk, 4, blk, 260)  # bsums: 16 sums of 16 quants
    _store_f32(blk, F32(1) / iscale)


blocks = activation_blocks(_quantize_block, QK, BLOCK_BYTES)


@jit
def row_inputs_in_lanes(act: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """What the row dots of Q4_K and Q5_K read (``Loops.row_inputs``): (acts: d and bsums, the quants
    in the lanes' order)."""
    d, qs, _, bsums = unpack_for_lanes(act, 0)
    return (d, bsums), qs


@inline
def row_inputs_with_pair_sums(act: np.ndarray, offset: int) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """What the row dots of a format whose values are quants less ``offset`` read: (acts: d and the
    psums of :func:`unpack_for_lanes`, the quants in the lanes' order)."""
    d, qs, psums, _ = unpack_for_lanes(act, offset)
    return (d, psums), qs


@inline
def _dequantize_one(blocks: np.ndarray, out: np.ndarray, i: int, stream: bool) -> None:
    """Block ``i`` of uint8 (n_blocks, 292) into ``out[i]`` (float32 (n_blocks, 256)); plain stores."""
    d = read_d(blocks[i])
    for j in range(QK):
        out[i, j] = d * F32(np.int8(blocks[i, 4 + j]))


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="Q8_K", qtype=GGMLQuantizationType.Q8_K, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize=dequantize_ref, quantize=quantize_ref),
                     fill_derived=fill_bsums,
                     loops=Loops(quantize_work=4))
