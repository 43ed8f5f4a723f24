"""The conformance model of the dot products: exact integer parts, a rigorous bound on the float
reduction, the measured distance reported, and a wrong quant caught."""

from __future__ import annotations

import dataclasses

import numba
import numpy as np
import pytest

import quantbench_kernels as qk
from pytest_quantbench import Kernel
from pytest_quantbench.conformance import ConformanceError, check_dequantize, check_gemv, check_vec_dot, dot_bound

DOTS = [f.name for f in qk.formats("gemv")]


# Where one quant level is within the rounding bound of a 4096-wide row (128 blocks of 32): Q8_0's
# 8-bit quants (a level is 1/127 of a block's largest weight) and Q5_1's 5-bit ones, stored
# unsigned beside a min (the d and min terms cancel, and the bound follows their magnitudes).
# There the mutation is eight levels.
FINE_LEVELS = ("Q8_0", "Q5_1")


def _quant_field(fmt: qk.BlockFormat) -> str:
    """The field that holds the format's (low) quant bits, Q6_K's ``ql`` or everyone else's ``qs``:
    flipping bit 0 of one of its bytes moves one weight's quant by one level."""
    return "ql" if "ql" in fmt.block_dtype.names else "qs"


def _matrix(name: str, rows: int = 64, cols: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = qk.quantize(rng.standard_normal((rows, cols)).astype(np.float32), name)
    return w, rng.standard_normal(cols).astype(np.float32)


def _builtin(name: str, op: str = "gemv", **criterion) -> Kernel:
    fn = (lambda w, x: qk.gemv(w, x, name)) if op == "gemv" else (lambda w, x: qk.vec_dot(w, x, name))
    return Kernel("builtin", name, op, fn, **criterion)


@pytest.mark.parametrize("name", DOTS)
def test_the_exact_terms_sum_to_the_reference_within_its_rounding(name):
    w, x = _matrix(name)
    exact, bound, magnitude = dot_bound(qk.dot_terms(w, x, name), w.shape[1] // qk.get_format(name).block_bytes)
    reference = qk.gemv(w, x, name, backend="reference").astype(np.float64)
    assert np.all(np.abs(reference - exact) <= bound)
    assert np.all(bound < 1e-3 * magnitude)  # a bound, not a blanket
    assert np.any(reference != exact)  # the float reduction does round


@pytest.mark.parametrize("name", DOTS)
def test_the_exact_terms_of_no_rows_are_empty(name):
    w, x = _matrix(name)
    terms = qk.dot_terms(w[:0], x, name)
    full = qk.dot_terms(w[:1], x, name)
    for got, one in zip((terms.coef, terms.ints, terms.abs_ints), (full.coef, full.ints, full.abs_ints), strict=True):
        assert got.shape == (0, one.shape[1]) and got.dtype == one.dtype


@pytest.mark.parametrize("name", DOTS)
def test_the_builtin_dot_is_within_the_bound_and_reports_the_distance(name):
    w, x = _matrix(name)
    d = check_gemv(_builtin(name), qk.get_format(name), w, x)
    assert d.criterion == "within the rounding bound"
    assert d.max_ulps == 0 and 0 < d.bound_share < 1 and d.values == 64


@numba.njit(fastmath=True)
def _fastmath_sums(coef: np.ndarray, ints: np.ndarray, out: np.ndarray) -> None:
    for r in range(coef.shape[0]):
        s = np.float32(0)
        for t in range(coef.shape[1]):
            s += coef[r, t] * ints[r, t]
        out[r] = s


def _fastmath_q4_k_gemv():
    """A Q4_K gemv that takes each block's exact terms (``qk.dot_terms``: float32 scales times
    exact integer sums) and adds them term after term, not in C's order (8 lane sums, then the
    lanes), in a loop built with fastmath=True, so that LLVM may reorder the sums further and
    contract them into fused multiply-adds, as llama.cpp's SIMD dots do. (The built-in kernels do
    their float steps in their own IR, which fastmath does not reach.)"""

    def gemv(w, x):
        terms = qk.dot_terms(w, x, "Q4_K")
        out = np.empty(w.shape[0], dtype=np.float32)
        _fastmath_sums(terms.coef.astype(np.float32), terms.ints.astype(np.float32), out)
        return out

    return gemv


def test_a_fastmath_reduction_of_the_exact_terms_passes_within_the_bound_and_not_bit_for_bit():
    w, x = _matrix("Q4_K", rows=256)
    fast = Kernel("fastmath", "Q4_K", "gemv", _fastmath_q4_k_gemv())
    fmt = qk.get_format("Q4_K")
    d = check_gemv(fast, fmt, w, x)
    assert d.max_ulps > 0 and d.bound_share < 0.05
    with pytest.raises(ConformanceError, match="is not bit-identical to the reference: .* rows differ"):
        check_gemv(dataclasses.replace(fast, exact=True), fmt, w, x)


def _flip_one_quant(name: str, w: np.ndarray, x: np.ndarray, row: int, rng: np.random.Generator
                    ) -> tuple[np.ndarray, int, int]:
    """``w`` with bit 0 (bit 3 for FINE_LEVELS) of one byte of row ``row``'s quants flipped, at a
    weight whose activation is at least the mean magnitude: (mutated w, block, weight index in the
    row)."""
    fmt = qk.get_format(name)
    field, start = fmt.block_dtype.fields[_quant_field(fmt)][:2]
    size = field.itemsize
    bit = 1 << 3 if name in FINE_LEVELS else 1
    before = qk.dequantize(w[row], name, backend="reference").reshape(-1)
    while True:
        block = int(rng.integers(w.shape[1] // fmt.block_bytes))
        mutated = w.copy()
        mutated[row, block * fmt.block_bytes + start + int(rng.integers(size))] ^= bit
        changed = np.flatnonzero(qk.dequantize(mutated[row], name, backend="reference").reshape(-1) != before)
        if len(changed) == 1 and abs(x[changed[0]]) >= np.abs(x).mean():
            return mutated, block, int(changed[0])


@pytest.mark.parametrize("name", DOTS)
def test_one_wrong_quant_in_a_4096_wide_row_fails_naming_row_block_and_distance(name):
    """Mutation test: in each of 8 rows, one weight (whose activation is not below the mean
    magnitude) off by one quant level; the kernel is otherwise the built-in one."""
    w, x = _matrix(name, rows=8, seed=1)
    fmt = qk.get_format(name)
    rng = np.random.default_rng(2)
    for row in range(w.shape[0]):
        mutated, block, _ = _flip_one_quant(name, w, x, row, rng)
        kernel = Kernel("one-wrong-quant", name, "gemv",
                        lambda wr, xr, m=mutated: qk.gemv(m if wr.shape == m.shape else _same_blocks(wr, w, m), xr,
                                                          name))
        with pytest.raises(ConformanceError) as err:
            check_gemv(kernel, fmt, w, x)
        message = str(err.value)
        assert f"1 of {w.shape[0]} rows outside it" in message
        assert f"first at row {row}:" in message
        assert f"block {block} of row {row} fails alone (" in message and "times its bound" in message
        assert "ulps from the reference's float32" in message and "times the allowed error" in message


def _same_blocks(asked: np.ndarray, original: np.ndarray, mutated: np.ndarray) -> np.ndarray:
    """The mutated bytes of the one block that the checker asks about alone (it reruns the kernel
    on one block to say which fails): look the block up in the original matrix."""
    width = asked.shape[1]
    flat_o = original.reshape(-1, width)
    flat_m = mutated.reshape(-1, width)
    for i in range(flat_o.shape[0]):
        if np.array_equal(flat_o[i], asked[0]):
            return flat_m[i:i + 1]
    return asked


def test_a_vec_dot_kernel_off_by_one_quant_fails_too():
    name = "Q6_K"
    w, x = _matrix(name, rows=1, seed=3)
    mutated, block, _ = _flip_one_quant(name, w, x, 0, np.random.default_rng(4))
    fmt = qk.get_format(name)

    def kernel(wr, xr):
        return qk.vec_dot(mutated[0] if wr.size == w.size else _same_blocks(wr.reshape(1, -1), w, mutated), xr, name)

    with pytest.raises(ConformanceError, match=rf"block {block} of row 0 fails alone"):
        check_vec_dot(Kernel("bad", name, "vec_dot", kernel), fmt, w[0].reshape(-1, fmt.block_bytes), x)
    assert check_vec_dot(_builtin(name, "vec_dot"), fmt, w[0].reshape(-1, fmt.block_bytes), x).max_ulps == 0


def test_a_declared_tolerance_is_added_to_the_bound_and_shown():
    name = "Q4_K"
    w, x = _matrix(name, rows=8)
    fmt = qk.get_format(name)
    off = Kernel("off", name, "gemv", lambda wr, xr: qk.gemv(wr, xr, name) * np.float32(1 + 1e-3))
    with pytest.raises(ConformanceError, match="is not within the rounding bound of the reference"):
        check_gemv(off, fmt, w, x)
    d = check_gemv(dataclasses.replace(off, rtol=2e-3), fmt, w, x)
    assert d.criterion == "within rtol=0.002, atol=0" and 0.3 < d.bound_share < 1 and d.max_ulps > 1000


def test_a_float16_dequantizer_passes_when_it_says_so_and_fails_when_it_does_not():
    name = "Q4_K"
    raw = qk.quantize(np.random.default_rng(5).standard_normal(4 * 256).astype(np.float32), name)
    fmt = qk.get_format(name)

    def half(r):
        return qk.dequantize(r, name).astype(np.float16)

    with pytest.raises(ConformanceError, match="returned dtype float16, expected float32"):
        check_dequantize(Kernel("half", name, "dequantize", half), fmt, raw)
    d = check_dequantize(Kernel("half", name, "dequantize", half, precision="float16"), fmt, raw)
    # Its weights are the reference's rounded to float16: 0 float16 ulps away, and a share of the bound used.
    assert d.criterion == "within float16 precision" and d.max_ulps == 0 and 0 < d.bound_share <= 1
    off_by_one = Kernel("half", name, "dequantize", lambda r: np.nextafter(half(r), np.float16(np.inf)),
                        precision="float16")
    assert check_dequantize(off_by_one, fmt, raw).max_ulps == 1  # ulps in the declared precision
    wrong = Kernel("half", name, "dequantize", lambda r: (half(r) * np.float16(1.01)), precision="float16")
    with pytest.raises(ConformanceError, match="is not within float16 precision of the reference: .* weights outside"):
        check_dequantize(wrong, fmt, raw)


@pytest.mark.parametrize("kind", ["dlpack", "array", "device"])
def test_a_kernel_may_return_any_array_numpy_can_take(kind):
    name = "Q4_K"
    w, x = _matrix(name, rows=4)
    fmt = qk.get_format(name)

    class DLPackOnly:  # an array library's array: DLPack, no __array__
        def __init__(self, a):
            self._a = a

        def __dlpack__(self, **kwargs):
            return self._a.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self._a.__dlpack_device__()

    class ArrayOnly:
        def __init__(self, a):
            self._a = a

        def __array__(self, dtype=None, copy=None):
            return self._a

    class OnDevice:  # like a CUDA tensor: no host export until .cpu()
        def __init__(self, a):
            self._a = a

        def __dlpack__(self, **kwargs):
            raise BufferError("the array is on a device")

        def __dlpack_device__(self):
            return (2, 0)

        def cpu(self):
            return DLPackOnly(self._a)

    wrap = {"dlpack": DLPackOnly, "array": ArrayOnly, "device": OnDevice}[kind]
    kernel = Kernel(kind, name, "gemv", lambda wr, xr: wrap(qk.gemv(wr, xr, name)))
    assert check_gemv(kernel, fmt, w, x).max_ulps == 0
    with pytest.raises(ConformanceError, match="returned object, which NumPy cannot take"):
        check_gemv(Kernel("opaque", name, "gemv", lambda wr, xr: object()), fmt, w, x)


@pytest.mark.parametrize(("fields", "message"), [
    ({"precision": "float8"}, "precision 'float8' is not one of float32, float16, bfloat16"),
    ({"rtol": -1.0}, "rtol must be a finite number >= 0"),
    ({"atol": float("nan")}, "atol must be a finite number >= 0"),
    ({"exact": True, "rtol": 1e-3}, "exact=True asks for bit-identity"),
    ({"adds_per_block": 0}, "adds_per_block must be a positive integer"),
    ({"threads": "two"}, "threads must be a positive integer"),
])
def test_a_criterion_that_makes_no_sense_is_refused_with_the_reason(fields, message):
    kernel = Kernel("k", "Q4_K", "gemv", lambda w, x: None, **fields)
    assert message in kernel.problem()


def test_a_tolerance_on_a_quantizer_is_refused():
    kernel = Kernel("k", "Q4_K", "quantize", lambda x: None, rtol=1e-3)
    assert "quantize is checked byte for byte" in kernel.problem()


def test_a_wrong_kernel_that_refuses_one_block_rows_is_still_named_without_a_block():
    name = "Q4_K"
    w, x = _matrix(name, rows=4, seed=5)

    def whole_rows_only(wr, xr):
        if wr.shape != w.shape:
            raise ValueError("this kernel takes 16-block rows only")
        return qk.gemv(wr, xr, name) + np.float32(1.0)

    with pytest.raises(ConformanceError) as err:
        check_gemv(Kernel("picky", name, "gemv", whole_rows_only), qk.get_format(name), w, x)
    assert "first at row 0:" in str(err.value)
    assert "(run on block 0 of row 0 alone, the kernel raised ValueError, so no block is named)" in str(err.value)
