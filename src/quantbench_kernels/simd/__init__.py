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

The package, by concern (each module's docstring says more):

- :mod:`.features`: what the CPU offers, and :data:`CODEGEN`, the spelling in the cache stamp;
- :mod:`.ir`: LLVM IR primitives (vectors, shuffles, loads, stores, sums);
- :mod:`.stores`: streaming stores, the dequantized values' stores, prefetching;
- :mod:`.dots`: integer dot algebra (pmaddwd, pmaddubsw, vpdpbusd, the 8-lane k-quant dots);
- :mod:`.activations`: the activation vector in the order the row dots read it;
- :mod:`.decoders`: 32-weight blocks decoded into ``<32 x i8>`` values, f16 scales;
- :mod:`.rows`: a row of a gemv in one intrinsic (:func:`row_sums_intrinsic` and its families);
- :mod:`.quantizers`: the quantizers' extremes, levels and f16 rounding.

Every name is importable from here (``simd.row_dot_intrinsic``); the formats use it so.
"""

from .activations import (
    byte_shuffle,
    pair_sums32,
    sum32_int8,
    sums16_of_256,
)
from .decoders import (
    PAIR_ORDER,
    bit_per_lane,
    f16_at,
    f16_header,
    f16_to_f32,
    less_offset,
    load_f16,
    load_u32,
    lookup16,
    nibble_decoders,
    nibbles32,
)
from .dots import (
    DOT_VALUES,
    LANE_Q8_ORDER,
    TransposeSum,
    bits8,
    dot32_lanes,
    dot_quads,
    dot_quads64,
    hadd,
    lanes_dot,
    load_bytes,
    lookup64,
    madd16,
    maddubs,
    pair_scales,
    psign,
    transpose_sum,
)
from .features import (
    CODEGEN,
    F16C,
    MASK_REGISTERS,
    PMADDUBSW,
    PMADDWD,
    PMADDWDS,
    PSHUFB,
    PSIGNB,
    VPDPBUSD,
    WIDE_LOOKUP_DOT,
)
from .ir import (
    F32,
    I8,
    I16,
    I32,
    I64,
    c_array,
    const_vec,
    element_ptr,
    fabs,
    fold,
    load,
    offset,
    pick,
    splat,
    splat_const,
    store,
    tree_sum,
    vec,
)
from .quantizers import (
    EXTREMES,
    amax32,
    f16c_bits,
    first_extreme32_intrinsic,
    first_largest32,
    first_largest256,
    levels32,
    max32,
    min32,
)
from .rows import (
    LANE_COUNTS,
    MAX_ROWS,
    BlockLanes,
    RowStep,
    RowSums,
    ScaledLanes,
    WholeSteps,
    block32_dequantize_intrinsic,
    offset_lanes_dequantize,
    offset_lanes_kernels,
    offset_lanes_row_dot,
    row_dot_intrinsic,
    row_sums_intrinsic,
)
from .stores import (
    PREFETCH_BYTES,
    STREAM_BYTES,
    dequantize_intrinsic,
    indexed_dequantize_intrinsic,
    prefetch,
    prefetch_ahead,
    store_dequantized,
    store_fence,
    store_weights,
    times_float,
)

__all__ = [
    "BlockLanes",
    "CODEGEN",
    "DOT_VALUES",
    "EXTREMES",
    "F16C",
    "F32",
    "I16",
    "I32",
    "I64",
    "I8",
    "LANE_COUNTS",
    "LANE_Q8_ORDER",
    "MASK_REGISTERS",
    "MAX_ROWS",
    "PAIR_ORDER",
    "PMADDUBSW",
    "PMADDWD",
    "PMADDWDS",
    "PREFETCH_BYTES",
    "PSHUFB",
    "PSIGNB",
    "RowStep",
    "RowSums",
    "STREAM_BYTES",
    "ScaledLanes",
    "TransposeSum",
    "VPDPBUSD",
    "WIDE_LOOKUP_DOT",
    "WholeSteps",
    "amax32",
    "bit_per_lane",
    "bits8",
    "block32_dequantize_intrinsic",
    "byte_shuffle",
    "c_array",
    "const_vec",
    "dequantize_intrinsic",
    "dot32_lanes",
    "dot_quads",
    "dot_quads64",
    "element_ptr",
    "f16_at",
    "f16_header",
    "f16_to_f32",
    "f16c_bits",
    "fabs",
    "first_extreme32_intrinsic",
    "first_largest256",
    "first_largest32",
    "fold",
    "hadd",
    "indexed_dequantize_intrinsic",
    "lanes_dot",
    "less_offset",
    "levels32",
    "load",
    "load_bytes",
    "load_f16",
    "load_u32",
    "lookup16",
    "lookup64",
    "madd16",
    "maddubs",
    "max32",
    "min32",
    "nibble_decoders",
    "nibbles32",
    "offset",
    "offset_lanes_dequantize",
    "offset_lanes_kernels",
    "offset_lanes_row_dot",
    "pair_scales",
    "pair_sums32",
    "pick",
    "prefetch",
    "prefetch_ahead",
    "psign",
    "row_dot_intrinsic",
    "row_sums_intrinsic",
    "splat",
    "splat_const",
    "store",
    "store_dequantized",
    "store_fence",
    "store_weights",
    "sum32_int8",
    "sums16_of_256",
    "times_float",
    "transpose_sum",
    "tree_sum",
    "vec",
]
