"""Hypothesis strategies for quantized blocks and quantizer inputs, driven by the format registry.

``blocks(qtype)`` draws valid raw blocks of any registered format from its structured block dtype,
weighting edge cases: f16 scales that are zero, -0, subnormal, the largest finite, negative, inf
and NaN; quant and scale bytes that are all zero or all 0xFF (for Q4_K that is scales and mins at 0
and at 63). ``float_rows(qtype)`` draws float32 quantizer inputs: zeros, constants, one outlier,
tiny (1e-30) and huge (1e30) magnitudes, exact ties, and rows that look like model weights.

Profiles: "dev" (quick, random) and "ci" (derandomized, 500 examples); both have no deadline,
since the first call of a Numba kernel compiles it. :func:`load_profile` picks "ci" when CI=true.
"""

from __future__ import annotations

import functools
import os

import hypothesis.strategies as st
import numpy as np
from hypothesis import HealthCheck, settings

from quantbench_kernels import BlockFormat, get_format

# f16 bit patterns worth hitting on purpose.
F16_EDGES = (
    0x0000,  # +0
    0x8000,  # -0
    0x0001,  # smallest subnormal
    0x03FF,  # largest subnormal
    0x8200,  # negative subnormal
    0x0400,  # smallest normal
    0x7BFF,  # largest finite (65504)
    0xFBFF,  # most negative finite
    0x3C00,  # 1.0
    0xBC00,  # -1.0
    0x7C00,  # +inf
    0xFC00,  # -inf
    0x7E00,  # NaN
    0xFE01,  # NaN with sign and payload
)

F32_EDGES = (0.0, -0.0, 1e-45, 1e-38, 3.4028235e38, -1.0, float("inf"), float("-inf"), float("nan"))


# Of those, the ones a model's scales never are: what a kernel declaring extreme_scales=False is spared.
F16_EXTREMES = (0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0xFE01)


def f16_bits(extreme: bool = True) -> st.SearchStrategy[int]:
    """f16 bit patterns: edge cases, typical block scales (2^-20..1), and any pattern at all; with
    ``extreme`` False, no inf, NaN or magnitude above 1.0 (the other edges and the typical scales)."""
    typical = st.floats(2.0**-20, 1.0, width=16).map(lambda v: int(np.float16(v).view(np.uint16)))
    if not extreme:
        return st.one_of(st.sampled_from([b for b in F16_EDGES if b not in F16_EXTREMES]), typical,
                         typical.map(lambda b: b | 0x8000))
    return st.one_of(st.sampled_from(F16_EDGES), typical, typical.map(lambda b: b | 0x8000), st.integers(0, 0xFFFF))


def _f32() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from(F32_EDGES), st.floats(-1.0, 1.0, width=32), st.floats(width=32))


def _int_array(base: np.dtype, count: int) -> st.SearchStrategy[np.ndarray]:
    """``count`` integers of ``base`` (an integer dtype): all its smallest, all its largest, all one
    value, or anything. Anything is one draw of raw bytes: a draw per element made a 256-weight
    block cost milliseconds to draw, most of a dot test's time, for the same set of arrays."""
    info = np.iinfo(base)
    lo, hi = int(info.min), int(info.max)
    same = st.integers(lo, hi).map(lambda v: np.full(count, v, dtype=base))
    size = count * base.itemsize
    anything = st.binary(min_size=size, max_size=size).map(
        lambda b: np.frombuffer(b, dtype=base.newbyteorder("<")).astype(base))
    return st.one_of(st.just(np.full(count, lo, dtype=base)), st.just(np.full(count, hi, dtype=base)), same, anything)


@functools.cache
def _field(dtype: np.dtype, extreme: bool = True) -> st.SearchStrategy:
    # One strategy per field type, built once: Hypothesis validates a new strategy on its first
    # draw, which cost more than the draws themselves when a strategy was built per field and block.
    base, shape = (dtype.subdtype if dtype.subdtype else (dtype, ()))
    count = int(np.prod(shape)) if shape else 1
    if base == np.float16:
        return f16_bits(extreme).map(lambda b: np.uint16(b).view(np.float16))
    if base == np.float32:
        return _f32().map(np.float32)
    if base.kind in "iu":
        return _int_array(base, count).map(lambda v: v.reshape(shape) if shape else v[0])
    raise TypeError(f"no strategy for block field dtype {dtype}")


@st.composite
def blocks(draw: st.DrawFn, qtype: str | BlockFormat, n_blocks: int | st.SearchStrategy[int] = 1,
           extreme: bool = True) -> np.ndarray:
    """Valid raw blocks of ``qtype``: uint8 (n_blocks, block_bytes), each field drawn with edge cases
    (``extreme`` False: f16 scales no larger than 1.0 and finite, :func:`f16_bits`)."""
    fmt = get_format(qtype)
    n = draw(n_blocks) if isinstance(n_blocks, st.SearchStrategy) else n_blocks
    out = np.zeros(n, dtype=fmt.block_dtype)
    for i in range(n):
        for name in fmt.block_dtype.names:
            out[name][i] = draw(_field(fmt.block_dtype.fields[name][0], extreme))
    if fmt.fill_derived is not None:
        fmt.fill_derived(out)
    return out.view(np.uint8).reshape(n, fmt.block_bytes)


def weight_like(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values shaped like transformer weights: Student-t (heavy tails), std about 0.02."""
    return (rng.standard_t(5, size=shape) * 0.015).astype(np.float32)


@st.composite
def float_rows(draw: st.DrawFn, qtype: str | BlockFormat, n_blocks: int | st.SearchStrategy[int] = 1) -> np.ndarray:
    """Finite float32 input for ``quantize``: 1-D, ``n_blocks`` blocks long."""
    fmt = get_format(qtype)
    nb = draw(n_blocks) if isinstance(n_blocks, st.SearchStrategy) else n_blocks
    n = nb * fmt.block_weights
    kind = draw(st.sampled_from(["zeros", "constant", "outlier", "tiny", "huge", "ties", "weights", "any"]))
    seed = draw(st.integers(0, 2**32 - 1))
    if kind == "zeros":
        return np.zeros(n, dtype=np.float32)
    if kind == "constant":
        return np.full(n, draw(st.floats(-1e3, 1e3, width=32)), dtype=np.float32)
    if kind == "any":
        values = st.floats(allow_nan=False, allow_infinity=False, width=32)
        return np.array(draw(st.lists(values, min_size=n, max_size=n)), dtype=np.float32)
    if kind == "ties":
        # Small integers and halves: exact ties for the rounding steps.
        return np.random.default_rng(seed).integers(-8, 9, size=n).astype(np.float32) / np.float32(2)
    x = weight_like(np.random.default_rng(seed), (n,))
    if kind == "outlier":
        x[draw(st.integers(0, n - 1))] = draw(st.sampled_from([-1.0, 1.0])) * draw(st.floats(1.0, 1e4, width=32))
    elif kind == "tiny":
        x = (x * np.float32(1e-28)).astype(np.float32)  # about 1e-30
    elif kind == "huge":
        x = (x * np.float32(1e32)).astype(np.float32)  # about 1e30
    return x


@st.composite
def non_finite_rows(draw: st.DrawFn, qtype: str | BlockFormat) -> np.ndarray:
    """A float row that is valid except for one NaN or +/-inf."""
    x = draw(float_rows(qtype))
    x[draw(st.integers(0, x.shape[0] - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x


@st.composite
def vec_dot_args(draw: st.DrawFn, qtype: str | BlockFormat, extreme: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Arguments of a vec_dot kernel: one row of 1-3 blocks, uint8 (n_blocks, block_bytes), and a
    float32 activation of its length, drawn as the activation format's quantizer input."""
    fmt = get_format(qtype)
    nb = draw(st.integers(1, 3))
    x = draw(float_rows(fmt.activation, n_blocks=nb))
    return draw(blocks(fmt, n_blocks=nb, extreme=extreme)), x


@st.composite
def gemv_args(draw: st.DrawFn, qtype: str | BlockFormat, extreme: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Arguments of a gemv kernel: 1-3 rows of 1-3 blocks, uint8 (rows, row_bytes), and a float32
    activation of a row's length."""
    fmt = get_format(qtype)
    nb = draw(st.integers(1, 3))
    x = draw(float_rows(fmt.activation, n_blocks=nb))
    rows = draw(st.integers(1, 3))
    return draw(blocks(fmt, n_blocks=rows * nb, extreme=extreme)).reshape(rows, -1), x


# What llama-imatrix's averaged squares look like, and the edges: zeros (columns never seen),
# huge and subnormal values.
_IMPORTANCE_ENTRY = st.one_of(st.just(0.0), st.floats(2.0**-20, 2.0**14, width=32),
                              st.floats(2.0**100, 2.0**120, width=32), st.floats(2.0**-149, 2.0**-127, width=32))


def importance(n: int) -> st.SearchStrategy[np.ndarray]:
    """float32 (n,) importance-matrix entries: any mix of the values above, one column alone, all
    equal."""
    from hypothesis.extra import numpy as hnp

    one_hot = st.integers(0, n - 1).map(lambda k: np.eye(1, n, k, dtype=np.float32)[0])
    uniform = st.floats(2.0**-10, 2.0**10, width=32).map(lambda v: np.full(n, v, dtype=np.float32))
    return st.one_of(hnp.arrays(np.float32, n, elements=_IMPORTANCE_ENTRY), one_hot, uniform)


@st.composite
def imatrix_args(draw: st.DrawFn, qtype: str | BlockFormat) -> tuple[np.ndarray, np.ndarray]:
    """Input for ``quantize`` with an importance matrix: float32 rows (1-3 of the same 1-3 blocks)
    and their importance, float32 (row length,)."""
    fmt = get_format(qtype)
    nb = draw(st.integers(1, 3))
    rows = np.stack([draw(float_rows(fmt, n_blocks=nb)) for _ in range(draw(st.integers(1, 3)))])
    return rows, draw(importance(rows.shape[1]))


def register_profiles() -> None:
    """Register the "dev" and "ci" Hypothesis profiles."""
    common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("dev", max_examples=60, **common)
    settings.register_profile("ci", max_examples=500, derandomize=True, print_blob=True, **common)


def load_profile() -> str:
    """Load "ci" when the environment variable CI is "true" (as CI services set it), else "dev"."""
    register_profiles()
    name = "ci" if os.environ.get("CI", "").lower() == "true" else "dev"
    settings.load_profile(name)
    return name
