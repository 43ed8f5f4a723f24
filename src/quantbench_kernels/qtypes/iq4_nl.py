"""IQ4_NL: 32 weights in 18 bytes (4.5 bits per weight), non-linear 4-bit values, dot products on
Q8_0 activations.

::

    offset  size  field
         0     2  d   f16, scale
         2    16  qs  4-bit indices into KVALUES: byte j holds weight j in its low nibble and
                      weight j + 16 in its high nibble

    weight = d * KVALUES[q]        (llama.cpp's kvalues_iq4nl)

Quantize is llama.cpp's ``quantize_iq4_nl``: ``quantize_row_iq4_nl_impl`` without an importance
matrix and with its search of 15 scales (``ntry = 7``), as ``ggml_quantize_chunk`` and
``llama-quantize`` run it. ``quantize_row_iq4_nl_ref`` (``from_float_ref``, and the CPU backend's
``from_float``) skips that search (``ntry = -1``): :func:`quantize_row_ref_ref`, in the registry's
``quantizers``, for kernels that follow it. The search
and the table are shared with IQ4_XS. The dot product follows ``ggml_vec_dot_iq4_nl_q8_0_generic``
(``sumf += (dy * d) * sumi``).
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType

from .. import refmath, simd
from ..compilation import Loops, helper, inline
from ..jitmath import F32, GROUP_MAX_EPS, importance_weights, write_f16
from ..registry import BlockFormat, Ops
from . import q8_0

BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
QK = 32
BLOCK_BYTES = 18
KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8)
NTRY = 7  # the search tries the scales (itry + KVALUES[0]) / max for itry = -NTRY..NTRY


# ----------------------------------------------------------------------------------------------
# Reference (NumPy)
# ----------------------------------------------------------------------------------------------


def best_index_ref(v: np.ndarray) -> np.ndarray:
    """llama.cpp's ``best_index_int8(16, kvalues_iq4nl, v)`` of float32 ``v``: the index of the
    nearest table value, the upper one on a tie (uint8, same shape)."""
    table = KVALUES.astype(np.float32)
    upper = np.clip(np.searchsorted(table, v, side="right"), 1, 15)  # table[upper - 1] <= v < table[upper]
    lower_nearer = (v - table[upper - 1]) < (table[upper] - v)
    index = np.where(lower_nearer, upper - 1, upper)
    return np.where(v <= table[0], 0, np.where(v >= table[15], 15, index)).astype(np.uint8)


def _fit_ref(x: np.ndarray, weight: np.ndarray, inv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Levels of ``x`` (float32 (groups, 32)) at the inverse scales ``inv`` (groups,), and the
    sequential float32 sums of weight * q * x and weight * q * q."""
    levels = best_index_ref(inv[:, None] * x)
    q = KVALUES.astype(np.float32)[levels]
    sumqx = np.zeros(x.shape[0], dtype=np.float32)
    sumq2 = np.zeros(x.shape[0], dtype=np.float32)
    for j in range(x.shape[1]):
        sumqx = sumqx + weight[:, j] * q[:, j] * x[:, j]
        sumq2 = sumq2 + weight[:, j] * q[:, j] * q[:, j]
    return levels, sumqx, sumq2


def search_ref(x: np.ndarray, weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The scale search of ``quantize_row_iq4_nl_impl`` (``ntry = 7``) for every group of 32 weights
    (float32 (groups, 32)), each value weighted by ``weight`` (float32 (groups, 32): given an
    importance matrix, :func:`importance_weights_ref`) or by its square: (scales float32 (groups,),
    0 for a group whose largest magnitude is below GROUP_MAX_EPS; levels uint8 (groups, 32), valid
    where the scale is not 0)."""
    weight = x * x if weight is None else weight
    vmax = refmath.first_largest(x)
    live = np.abs(vmax) >= refmath.GROUP_MAX_EPS
    vmax = np.where(live, vmax, F32(1))  # dead groups: any finite value, their results are dropped
    d = -vmax / F32(KVALUES[0])
    levels, sumqx, sumq2 = _fit_ref(x, weight, F32(1) / d)
    d = np.where(sumq2 > 0, sumqx / sumq2, F32(0))  # no weight (an importance of zeros): 0
    best = d * sumqx
    for itry in range(-NTRY, NTRY + 1):
        _, sumqx, sumq2 = _fit_ref(x, weight, F32(itry + int(KVALUES[0])) / vmax)
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        d = np.where(better, sumqx / sumq2, d)
        best = np.where(better, d * sumqx, best)
    return np.where(live, d, F32(0)).astype(np.float32), levels


def values_ref(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d float32 (...,), each weight's table value, int32 (..., 32)) of uint8 (..., 18) blocks."""
    b = blocks.view(BLOCK_DTYPE)[..., 0]
    return b["d"].astype(np.float32), KVALUES.astype(np.int32)[refmath.nibbles_ref(b["qs"])]


def dequantize_ref(blocks: np.ndarray, out: np.ndarray, threads: int | None = None) -> None:
    """uint8 (n_blocks, 18) -> ``out``, float32 (n_blocks, 32)."""
    d, v = values_ref(blocks)
    out[...] = d[:, None] * v


def importance_weights_ref(x: np.ndarray, imatrix: np.ndarray, super_block: int) -> np.ndarray:
    """The weights ``quantize_row_iq4_nl_impl`` gives each value given an importance matrix:
    ``refmath.importance_ref`` with ``sigma2 = sum_x2 * (2.f / super_block)`` per super-block (32
    weights for IQ4_NL, 256 for IQ4_XS). ``x`` float32 (rows, n_per_row) -> (n_blocks of 32, 32)."""
    return refmath.block_importance_ref(x, imatrix, super_block,
                                        lambda sum_x2: sum_x2 * F32(2.0 / super_block)).reshape(-1, 32)


def quantize_ref(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (n_blocks, 32) -> uint8 (n_blocks, 18): the search, then every weight re-quantized
    against the scale found (not its f16 rounding)."""
    return _quantize_ref(x, None)


def quantize_imatrix_ref(x: np.ndarray, imatrix: np.ndarray, threads: int | None = None) -> np.ndarray:
    """float32 (rows, n_per_row) with importance float32 (n_per_row,) -> uint8 (n_blocks, 18), as
    ``quantize_iq4_nl`` given ``quant_weights``: :func:`quantize_ref` with the search's weights
    from :func:`importance_weights_ref`."""
    return _quantize_ref(x.reshape(-1, QK), importance_weights_ref(x, imatrix, QK))


def quantize_row_ref_ref(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """llama.cpp's other IQ4_NL quantizer, ``quantize_row_iq4_nl_ref`` (ggml's ``from_float_ref``
    and the CPU backend's ``from_float``): ``quantize_row_iq4_nl_impl`` with ``ntry = -1``, so no
    scale search: one fit at the scale ``max / KVALUES[0]`` (the value of largest magnitude mapped
    to -127), the scale refitted as sumqx / sumq2, and the quants of that first fit kept.
    float32 (n_blocks, 32) -> (uint8 (n_blocks, 18), bool (n_blocks, 18): the bytes llama.cpp
    defines). A block whose largest magnitude is below GROUP_MAX_EPS gets d = 0 and quants that C
    never writes: it packs its uninitialised level array (the previous block's levels, or stack
    garbage for the first), undefined behaviour. Those 16 bytes are written here as the searching
    quantizer writes them (0x88) and marked undefined, so a kernel is not held to them."""
    vmax = refmath.first_largest(x)
    live = np.abs(vmax) >= refmath.GROUP_MAX_EPS
    d = np.where(live, vmax, F32(1)) / F32(KVALUES[0])
    levels, sumqx, sumq2 = _fit_ref(x, x * x, F32(1) / d)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(live, sumqx / sumq2, F32(0)).astype(np.float32)
    levels = np.where(live[:, None], levels, np.uint8(8))
    out = refmath.blocks_ref(BLOCK_DTYPE, d=refmath.f16_ref(d), qs=refmath.pack_nibbles_ref(levels))
    defined = np.ones(out.shape, dtype=bool)
    defined[~live, 2:] = False
    return out, defined


def _quantize_ref(x: np.ndarray, weight: np.ndarray | None) -> np.ndarray:
    d, _ = search_ref(x, weight)
    inv = np.where(d != 0, F32(1) / d, F32(0)).astype(np.float32)
    levels = best_index_ref(inv[:, None] * x)
    return refmath.blocks_ref(BLOCK_DTYPE, d=refmath.f16_ref(d), qs=refmath.pack_nibbles_ref(levels))


# Dot products on Q8_0 activations, as the generic dot.
gemv_ref, dot_terms_ref = q8_0.dots_ref(values_ref)


# ----------------------------------------------------------------------------------------------
# Numba kernels
# ----------------------------------------------------------------------------------------------


KV_INT = KVALUES.astype(np.int32)  # the table as the kernels read it (IQ4_XS's too)
KV_FLOAT = KVALUES.astype(np.float32)


@inline
def best_index(v: np.float32) -> np.int32:
    """:func:`best_index_ref` of one value, as llama.cpp's binary search picks it."""
    # C's search ends with table[lo] <= v < table[lo + 1]: the largest such lo, found in four
    # steps of selects, then the nearer of lo and lo + 1, also a select: no branch for the
    # quantizer's search to mispredict (the last choice is a coin toss per value). C's early
    # returns need none: v <= table[0] takes no step (lo 0) and is nearer table[0]; v >= table[15]
    # takes all four (lo 15, then 14 by min()) and is not nearer table[14]; a NaN, for which no
    # comparison holds, does the same and ends at 15 as C's loop does.
    lo = np.int32(8) * np.int32(not v < KV_FLOAT[8])
    lo += np.int32(4) * np.int32(not v < KV_FLOAT[lo + 4])
    lo += np.int32(2) * np.int32(not v < KV_FLOAT[lo + 2])
    lo += np.int32(not v < KV_FLOAT[lo + 1])
    lo = min(lo, np.int32(14))
    return lo + np.int32(not v - KV_FLOAT[lo] < KV_FLOAT[lo + 1] - v)


@helper
def _fit(x: np.ndarray, inv: np.float32, levels: np.ndarray, qw: np.ndarray,
         weighted: bool) -> tuple[np.float32, np.float32]:
    sumqx = F32(0)
    sumq2 = F32(0)
    for j in range(QK):
        k = best_index(inv * x[j])
        levels[j] = k
        q = KV_FLOAT[k]
        w = qw[j] if weighted else x[j] * x[j]
        sumqx += w * q * x[j]
        sumq2 += w * q * q
    return sumqx, sumq2


@inline
def search(x: np.ndarray, scratch: np.ndarray) -> np.float32:
    """:func:`search_ref` of one group of 32 weights (``scratch``: uint8 (32,), overwritten)."""
    return _search(x, scratch, x, False)


@inline
def search_weighted(x: np.ndarray, scratch: np.ndarray, qw: np.ndarray) -> np.float32:
    """:func:`search` with each value weighted by ``qw`` (given importance)."""
    return _search(x, scratch, qw, True)


@inline
def super_block_sigma2(x: np.ndarray) -> np.float32:
    """``quantize_row_iq4_nl_impl``'s ``sigma2``: the super-block's sum of squares times 2 / its size."""
    total = F32(0)
    for j in range(x.shape[0]):
        total += x[j] * x[j]
    return total * F32(2.0 / x.shape[0])


@helper
def _search(x: np.ndarray, scratch: np.ndarray, qw: np.ndarray, weighted: bool) -> np.float32:
    vmax = simd.first_largest32(x, 0)
    if abs(vmax) < GROUP_MAX_EPS:
        return F32(0)
    sumqx, sumq2 = _fit(x, F32(1) / (-vmax / KV_FLOAT[0]), scratch, qw, weighted)
    d = sumqx / sumq2 if sumq2 > 0 else F32(0)  # no weight (an importance of zeros): 0
    best = d * sumqx
    for itry in range(-NTRY, NTRY + 1):
        sumqx, sumq2 = _fit(x, F32(itry + KV_INT[0]) / vmax, scratch, qw, weighted)
        if sumq2 > 0 and sumqx * sumqx > best * sumq2:
            d = sumqx / sumq2
            best = d * sumqx
    return d


@inline
def pack_levels(x: np.ndarray, inv: np.float32, blk: np.ndarray, offset: int) -> None:
    """Each of 32 weights' nearest table index at inverse scale ``inv``, packed as nibbles into
    ``blk[offset:offset + 16]``."""
    for j in range(16):
        blk[offset + j] = np.uint8(best_index(inv * x[j]) | (best_index(inv * x[j + 16]) << 4))


@inline
def _quantize_block(x: np.ndarray, blk: np.ndarray, scratch: np.ndarray) -> None:
    _write_block(x, blk, search(x, scratch))


@inline
def _quantize_imatrix_block(x: np.ndarray, qw: np.ndarray, blk: np.ndarray, sigma2: np.float32, weights: np.ndarray,
                            scratch: np.ndarray) -> None:
    importance_weights(x, qw, super_block_sigma2(x), weights)
    _write_block(x, blk, search_weighted(x, scratch, weights))


@inline
def _write_block(x: np.ndarray, blk: np.ndarray, d: np.float32) -> None:
    write_f16(blk, 0, d)
    pack_levels(x, F32(1) / d if d != 0 else F32(0), blk, 2)


# IR: the 32 table values of the 16 bytes of nibbles at byte ``at`` of ``w_``, as ``<32 x i8>`` in
# weight order (IQ4_XS's sub-blocks too).
table_values, _ = simd.nibble_decoders(qs_at=0, table=KVALUES.tolist())
# IR: the block's 32 values, and two blocks' at once (see ``simd.row_dot_intrinsic``).
_decode, _decode_pair = simd.nibble_decoders(qs_at=2, table=KVALUES.tolist())


def _terms(lanes: simd.BlockLanes, sumi):  # type: ignore[no-untyped-def]
    """IR: ``(dy * d) * sumi`` (acts: dy)."""
    b = lanes.builder
    return b.fmul(b.fmul(lanes.act(0), lanes.f16(0)), lanes.float(sumi))


_row_dot = simd.row_dot_intrinsic(_decode, BLOCK_BYTES, "signed", _terms,  # KVALUES: never -128
                                  decode_pair=_decode_pair)

_dequantize_one = simd.block32_dequantize_intrinsic(_decode, BLOCK_BYTES, simd.f16_header(0))


# The format; its loops (compilation.Loops) around this module's block kernels are generated into
# quantbench_kernels.loops by tools/generate_loops.py.
FORMAT = BlockFormat(name="IQ4_NL", qtype=GGMLQuantizationType.IQ4_NL, block_dtype=BLOCK_DTYPE,
                     reference=Ops(dequantize_ref, quantize_ref, gemv_ref, quantize_imatrix=quantize_imatrix_ref),
                     dot_terms=dot_terms_ref, activation="Q8_0", quantizer="quantize_iq4_nl",
                     quantizers={"quantize_row_iq4_nl_ref": quantize_row_ref_ref},
                     loops=Loops(quantize_work=64, row_inputs="q8_0.row_inputs_paired", two_rows=True,
                                 scratch=(("scratch", "uint8", QK),), quantize_imatrix="rows",
                                 imatrix_scratch=(("weights", "float32", QK), ("scratch", "uint8", QK))))
