"""The conformance model: what a kernel's output must be, and how far it was.

- dequantize and quantize: bit-identical (byte-identical) to the reference, unless a dequantize
  kernel declares a lower precision or a tolerance (:class:`Criterion`).
- vec_dot and gemv: the integer parts of llama.cpp's dot products are exact in every correct
  kernel; only the float reduction (its order, fused multiply-adds) may differ. Each row is checked
  against the exact value of its terms (``quantbench_kernels.dot_terms``, in float64) within a
  rigorous rounding bound (:func:`dot_bound`). A kernel that asks for ``exact=True`` must equal
  the reference's float order bit for bit.

Each check runs the kernel and the NumPy reference on the same input and returns the
:class:`Distance` it measured (largest distance in float32 ulps from the reference's output, the
largest share of the allowed error used), or raises :class:`ConformanceError` naming the kernel,
the format, the first failing block and weight (or byte, or row), the block's bytes in hex, the
expected and actual values with their bit patterns, the distance, and how many values fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

import quantbench_kernels as qk
from quantbench_kernels import BlockFormat

from .bitexact import first_difference

# Unit roundoff of the precisions a kernel may declare that it computes in.
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
# Roundings of one decoded weight in a lower precision: d * sc, times q, dmin * m, the subtraction.
DEQUANTIZE_ROUNDINGS = 4
# Roundings of one dot-product term besides the additions: the two scales' product (d * yd), the
# integer partial sum's conversion to float, and their product.
TERM_ROUNDINGS = 3
# The dot products' accumulation model (see dot_bound): float additions per block on any term's
# path (at least; a format whose dot has more terms per block, as IQ4_XS's eight sub-blocks, gets
# one per term), and additions of the final reduction of a kernel's accumulators.
ADDS_PER_BLOCK = 2
FINAL_ADDS = 32
# Absolute error one float32 operation may make in the subnormal range (half the smallest subnormal).
FLOAT32_UNDERFLOW = 2.0**-150
FLOAT32_MAX = float(np.finfo(np.float32).max)


class ConformanceError(AssertionError):
    """A kernel's output is outside its criterion (or the kernel failed to produce one)."""


@dataclass(frozen=True)
class Criterion:
    """What a kernel's output must satisfy: ``exact`` (bit-identical), else within the rounding of
    ``precision`` (the dot products' bound, or the decoded weights' rounding) plus
    ``atol + rtol * |expected|``."""

    exact: bool
    precision: str = "float32"
    rtol: float = 0.0
    atol: float = 0.0

    def describe(self) -> str:
        if self.exact:
            return "bit-identical"
        parts = [] if self.precision == "float32" else [f"{self.precision} precision"]
        if self.rtol or self.atol:
            parts.append(f"rtol={self.rtol:g}, atol={self.atol:g}")
        return "within " + (", ".join(parts) if parts else "the rounding bound")


class Checked(Protocol):
    """What a check reads of the kernel it runs (``pytest_quantbench.registration.Kernel`` is one)."""

    name: str
    op: str
    fn: Callable[..., Any]
    adds_per_block: int | None
    final_adds: int | None

    @property
    def criterion(self) -> Criterion: ...


@dataclass(frozen=True)
class Distance:
    """How far a kernel's output was on one input: the criterion it was held to, the largest
    distance in float32 ulps from the reference's output (for quantize: 0), and the largest share
    of the allowed error it used (None when bit-identity was required)."""

    criterion: str
    max_ulps: int = 0
    bound_share: float | None = None
    values: int = 0  # how many values (weights, bytes, rows) were compared


def _hex(raw: np.ndarray, limit: int = 400) -> str:
    text = np.ascontiguousarray(raw).tobytes().hex(" ")
    return text if len(text) <= limit * 3 else text[: limit * 3] + " ..."


def _call(kernel: Checked, fmt: BlockFormat, *args: Any) -> Any:
    try:
        return kernel.fn(*args)
    except Exception as err:
        raise ConformanceError(
            f"kernel {kernel.name!r} ({fmt.name} {kernel.op}) raised {type(err).__name__}: {err}"
        ) from err


def _host_candidates(value: Any) -> list[Any]:
    """``value``, then what its own methods make of it on the host: a torch tensor detached and
    moved to the CPU, a CuPy array copied to the host."""
    out = [value]
    for method in ("detach", "cpu", "get"):  # torch: detach().cpu(); CuPy: get()
        fn = getattr(out[-1], method, None)
        if callable(fn):
            try:
                out.append(fn())
            except Exception:  # noqa: BLE001 - try the next way to the host
                continue
    return out


def to_host(value: Any) -> np.ndarray | None:
    """A NumPy array of ``value``: itself, or through DLPack or ``__array__`` (torch on CPU or
    CUDA, CuPy, JAX, any array API library), on the host. None if NumPy cannot take it."""
    if isinstance(value, np.ndarray):
        return value
    for candidate in _host_candidates(value):
        if isinstance(candidate, np.ndarray):
            return candidate
        if hasattr(candidate, "__dlpack__"):
            try:
                return np.from_dlpack(candidate)
            except Exception:  # noqa: BLE001 - a device array, a dtype NumPy lacks: try __array__
                pass
        if hasattr(candidate, "__array__"):
            try:
                return np.asarray(candidate)
            except Exception:  # noqa: BLE001 - try the next candidate
                pass
    return None


def _as_array(kernel: Checked, fmt: BlockFormat, value: Any, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """The kernel's output as a NumPy array of ``shape``: ``dtype``, or for a kernel that declares a
    lower precision any floating dtype, widened to float32."""
    what = f"kernel {kernel.name!r} ({fmt.name} {kernel.op})"
    array = to_host(value)
    if array is None:
        raise ConformanceError(f"{what} returned {type(value).__name__}, which NumPy cannot take (no DLPack, no "
                               "__array__): return an array on the host or one that exports DLPack")
    lower = dtype is np.float32 and kernel.criterion.precision != "float32"
    if lower and array.dtype.kind == "f":
        array = array.astype(np.float32)
    if array.dtype != dtype:
        raise ConformanceError(f"{what} returned dtype {array.dtype}, expected {np.dtype(dtype)}")
    if array.size != int(np.prod(shape)):
        raise ConformanceError(f"{what} returned shape {array.shape}, expected {shape}")
    return np.ascontiguousarray(array).reshape(shape)


def ulps(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Distance in float32 units in the last place (int64): how many float32 values lie between;
    0 where both are NaN, a large sentinel (2**32) where only one is."""
    def ordered(a: np.ndarray) -> np.ndarray:
        bits = a.astype(np.float32).view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    with np.errstate(invalid="ignore"):
        out = np.abs(ordered(expected) - ordered(actual))
    nan_e, nan_a = np.isnan(expected), np.isnan(actual)
    return np.where(nan_e & nan_a, 0, np.where(nan_e | nan_a, 1 << 32, out))


def _header(kernel: Checked, fmt: BlockFormat, how: str | None = None) -> str:
    how = how or kernel.criterion.describe()
    return f"kernel {kernel.name!r} ({fmt.name} {kernel.op}) is not {how}" + (
        " to the reference" if how == "bit-identical" else " of the reference")


def _field_at(fmt: BlockFormat, offset: int) -> str:
    for name, (dtype, start) in fmt.block_dtype.fields.items():
        if start <= offset < start + dtype.itemsize:
            base = dtype.subdtype[0] if dtype.subdtype else dtype
            index = (offset - start) // base.itemsize
            return f"{name}[{index}]" if dtype.subdtype else name
    return "?"


def _value(v: float) -> str:
    """A float32 value and its bit pattern: ``0.5 (0x3f000000)``."""
    return f"{float(v)!r} (0x{np.float32(v).view(np.uint32):08x})"


def _exact(kernel: Checked, fmt: BlockFormat, expected: np.ndarray, actual: np.ndarray,
           where: Callable[[tuple[int, ...]], str], unit: str) -> Distance:
    """Bit-identity, with a message naming the first difference (``where(index)``)."""
    m = first_difference(expected, actual)
    if m is not None:
        distance = int(ulps(expected, actual).max()) if expected.dtype == np.float32 else 0
        raise ConformanceError(
            f"{_header(kernel, fmt, 'bit-identical')}: {m.n_different} of {m.n_total} {unit} differ"
            + (f" (up to {distance} ulps)" if distance else "") + "\n"
            f"  first at {where(m.index)}"
        )
    return Distance("bit-identical", values=int(expected.size))


def _within(kernel: Checked, fmt: BlockFormat, reference: np.ndarray, actual: np.ndarray, target: np.ndarray,
            allowed: np.ndarray, overflow_ok: np.ndarray, where: Callable[[tuple[int, ...]], str],
            unit: str) -> Distance:
    """``actual`` within ``allowed`` of ``target`` (the exact value, float64) where that is finite,
    or non-finite where float32 may overflow on the way (``overflow_ok``: another order of the same
    sums may overflow where the reference's did not, or not where it did); non-finite where the
    exact value is (a NaN or infinite scale)."""
    ok, share = _judge(actual, target, allowed, overflow_ok)
    distances = ulps(reference, actual)
    shares = np.where(np.isfinite(target) & np.isfinite(actual), share, 0.0)
    if not ok.all():
        bad = np.argwhere(~ok)
        index = tuple(int(i) for i in bad[0])
        raise ConformanceError(
            f"{_header(kernel, fmt)}: {len(bad)} of {ok.size} {unit} outside it\n"
            f"  first at {where(index)}\n"
            f"  distance: {int(distances[index])} ulps from the reference's float32, "
            f"{share[index]:.3g} times the allowed error {allowed[index]:.3g} (exact value {float(target[index])!r})"
        )
    return Distance(kernel.criterion.describe(), int(distances.max(initial=0)), float(shares.max(initial=0.0)),
                    int(reference.size))


def _judge(actual: np.ndarray, target: np.ndarray, allowed: np.ndarray, overflow_ok: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Which values pass (see :func:`_within`), and the share of the allowed error each used."""
    with np.errstate(all="ignore"):
        error = np.abs(actual.astype(np.float64) - target)
        share = np.where(allowed > 0, error / allowed, np.where(error == 0, 0.0, np.inf))
    finite = np.isfinite(target)
    return np.where(finite, (share <= 1) | (overflow_ok & ~np.isfinite(actual)), ~np.isfinite(actual)), share


def check_dequantize(kernel: Checked, fmt: BlockFormat, raw: np.ndarray) -> Distance:
    """``raw``: uint8 (n_blocks, block_bytes)."""
    expected = qk.dequantize(raw, fmt, backend="reference")
    actual = _as_array(kernel, fmt, _call(kernel, fmt, raw.copy()), np.float32, expected.shape)

    def where(index: tuple[int, ...]) -> str:
        block, weight = index
        return (f"block {block}, weight {weight}: expected {_value(expected[index])}, "
                f"got {_value(actual[index])}\n  block {block} bytes: {_hex(raw[block])}")

    c = kernel.criterion
    if c.exact:
        return _exact(kernel, fmt, expected, actual, where, "weights")
    e64 = expected.astype(np.float64)
    with np.errstate(all="ignore"):
        block_max = np.nanmax(np.where(np.isfinite(e64), np.abs(e64), 0.0), axis=1, keepdims=True)
        allowed = DEQUANTIZE_ROUNDINGS * UNIT_ROUNDOFF[c.precision] * block_max + c.atol + c.rtol * np.abs(e64)
    limit = float(np.finfo(c.precision).max) if c.precision != "bfloat16" else FLOAT32_MAX
    return _within(kernel, fmt, expected, actual, e64, allowed, np.abs(e64) + allowed > limit, where, "weights")


def check_quantize(kernel: Checked, fmt: BlockFormat, x: np.ndarray) -> Distance:
    """``x``: float32 (n_weights,)."""
    expected = qk.quantize(x, fmt, backend="reference")
    actual = _as_array(kernel, fmt, _call(kernel, fmt, x.copy()), np.uint8, expected.shape)

    def where(index: tuple[int, ...]) -> str:
        block, offset = index
        return (f"block {block}, byte {offset} ({_field_at(fmt, offset)}): "
                f"expected 0x{expected[index]:02x}, got 0x{actual[index]:02x}\n"
                f"  expected block {block}: {_hex(expected[block])}\n"
                f"  actual block {block}:   {_hex(actual[block])}\n"
                f"  input weights of block {block}: "
                f"{x[block * fmt.block_weights:(block + 1) * fmt.block_weights]!r}")

    return _exact(kernel, fmt, expected, actual, where, "bytes")


def check_quantize_imatrix(kernel: Checked, fmt: BlockFormat, x: np.ndarray, imatrix: np.ndarray) -> Distance:
    """``x``: float32 (rows, n_per_row); ``imatrix``: float32 (n_per_row,), its importance."""
    expected = qk.quantize(x, fmt, imatrix=imatrix, backend="reference").reshape(-1, fmt.block_bytes)
    actual = _as_array(kernel, fmt, _call(kernel, fmt, x.copy(), imatrix.copy()), np.uint8, expected.shape)
    per_row = x.shape[1] // fmt.block_weights

    def where(index: tuple[int, ...]) -> str:
        block, offset = index
        row, col = divmod(block, per_row)
        at = col * fmt.block_weights
        return (f"row {row}, block {col}, byte {offset} ({_field_at(fmt, offset)}): "
                f"expected 0x{expected[index]:02x}, got 0x{actual[index]:02x}\n"
                f"  expected block: {_hex(expected[block])}\n"
                f"  actual block:   {_hex(actual[block])}\n"
                f"  input weights: {x[row, at:at + fmt.block_weights]!r}\n"
                f"  their importance: {imatrix[at:at + fmt.block_weights]!r}")

    return _exact(kernel, fmt, expected, actual, where, "bytes")


def dot_bound(terms: qk.DotTerms, n_blocks: int, unit_roundoff: float = UNIT_ROUNDOFF["float32"],
              adds_per_block: int = ADDS_PER_BLOCK, final_adds: int = FINAL_ADDS
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact value of each row's dot product (rows of ``n_blocks`` blocks), a rigorous bound on
    the error of any correct kernel's float result, and the sum of the terms' magnitudes, each
    float64 (rows,).

    The model: a kernel multiplies exact integer partial sums of each block by that block's scale
    product (rounded: d * yd) and adds the float terms in any order, fused or not, such that no term
    passes through more than D = n_blocks x ``adds_per_block`` + ``final_adds`` additions (a kernel
    that keeps accumulators across blocks, as llama.cpp's generic and SIMD dots do, adds 1 or 2 per
    block and then reduces its accumulators). Each computed term then carries at most
    n = D + TERM_ROUNDINGS relative roundings, so the error is at most gamma_n = n u / (1 - n u)
    times the sum of the terms' magnitudes (Higham, Accuracy and Stability of Numerical Algorithms,
    2nd ed., lemma 3.1 and section 4.2), which is at most the sum over blocks of |scale product| x
    the sum of |integer product| over the weights (``DotTerms.abs_ints``: it bounds every integer
    partial sum a kernel may form). Added: n times the absolute error of one operation in the
    subnormal range, that error of each scale product times the integers it multiplies (a
    subnormal scale product, as MXFP4's smallest exponents give, loses absolute precision that
    the product with the integer sum scales up), and the float64 rounding of the exact value's
    own evaluation (2^-52 of the magnitude).
    """
    n = n_blocks * adds_per_block + final_adds + TERM_ROUNDINGS
    gamma = n * unit_roundoff / (1 - n * unit_roundoff)
    with np.errstate(all="ignore"):
        products = terms.coef * terms.ints.astype(np.float64)
        magnitude = (np.abs(terms.coef) * terms.abs_ints.astype(np.float64)).sum(axis=1)
        exact = np.array([math.fsum(row) if np.isfinite(row).all() else row.sum() for row in products])
        # A scale product in the subnormal range (MXFP4's 2**-128 times a small d) is off by up to
        # half the smallest subnormal, and the integer it multiplies scales that error up.
        scaled_underflow = (1 + gamma) * FLOAT32_UNDERFLOW * terms.abs_ints.astype(np.float64).sum(axis=1)
        bound = gamma * magnitude + n * FLOAT32_UNDERFLOW + scaled_underflow + 2.0**-52 * magnitude
    return exact, bound, magnitude


def _allowed(kernel: Checked, fmt: BlockFormat, w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """The exact values of rows ``w`` (uint8 (rows, row_bytes)) times ``x``, the error allowed to
    the kernel (its criterion's bound and tolerance), and where float32 may overflow on the way
    (a scale product or a partial sum beyond its range), each (rows,)."""
    c = kernel.criterion
    terms = qk.dot_terms(w, x, fmt)
    n_blocks = w.shape[1] // fmt.block_bytes
    adds_per_block = kernel.adds_per_block or max(ADDS_PER_BLOCK, terms.coef.shape[1] // n_blocks)
    exact, bound, magnitude = dot_bound(terms, n_blocks, UNIT_ROUNDOFF[c.precision], adds_per_block,
                                        kernel.final_adds or FINAL_ADDS)
    with np.errstate(all="ignore"):
        allowed = bound + c.atol + c.rtol * np.abs(exact)
        overflow = (magnitude + allowed > FLOAT32_MAX) | (np.abs(terms.coef) > FLOAT32_MAX).any(axis=1)
    return exact, allowed, overflow


def _check_rows(kernel: Checked, fmt: BlockFormat, w: np.ndarray, x: np.ndarray, expected: np.ndarray,
                actual: np.ndarray, rerun: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Distance:
    """Rows of dot products: bit-identical for an ``exact`` kernel, else within :func:`dot_bound`
    of the exact value. ``w``: uint8 (rows, row_bytes); ``expected``: the reference's float32;
    ``rerun(w_rows, x)`` calls the kernel again (on one block, to say which block fails)."""
    blocks = w.reshape(w.shape[0], -1, fmt.block_bytes)

    def where(index: tuple[int, ...]) -> str:
        row = index[0]
        text = f"row {row}: expected {_value(expected[row])}, got {_value(actual[row])}"
        return text + "\n  " + _failing_block(kernel, fmt, blocks[row], x, rerun, row)

    if kernel.criterion.exact:
        return _exact(kernel, fmt, expected, actual, where, "rows")
    exact, allowed, overflow = _allowed(kernel, fmt, w, x)
    return _within(kernel, fmt, expected, actual, exact, allowed, overflow, where, "rows")


def _failing_block(kernel: Checked, fmt: BlockFormat, row_blocks: np.ndarray, x: np.ndarray,
                   rerun: Callable[[np.ndarray, np.ndarray], np.ndarray], row: int) -> str:
    """Which block of a failing row fails on its own: the kernel run again on each block alone."""
    width = fmt.block_weights
    for b in range(row_blocks.shape[0]):
        w1, x1 = row_blocks[b:b + 1].reshape(1, -1), x[b * width:(b + 1) * width]
        expected = qk.gemv(w1, x1, fmt, backend="reference")
        try:
            actual = _as_array(kernel, fmt, rerun(w1.copy(), x1.copy()), np.float32, (1,))
        except Exception as err:  # noqa: BLE001 - the kernel may not take one-block rows: say less
            return (f"(run on block {b} of row {row} alone, the kernel raised {type(err).__name__}, so no block is "
                    f"named); row {row}, block 0 bytes: {_hex(row_blocks[0])}")
        if kernel.criterion.exact:
            bad = first_difference(expected, actual) is not None
            detail = f"{int(ulps(expected, actual)[0])} ulps"
        else:
            exact, allowed, overflow = _allowed(kernel, fmt, w1, x1)
            ok, share = _judge(actual, exact, allowed, overflow)
            bad = not ok[0]
            detail = f"{int(ulps(expected, actual)[0])} ulps, {share[0]:.3g} times its bound {allowed[0]:.3g}"
        if bad:
            return (f"block {b} of row {row} fails alone ({detail}): expected {_value(expected[0])}, "
                    f"got {_value(actual[0])}\n  row {row}, block {b} bytes: {_hex(row_blocks[b])}")
    return f"no block of row {row} fails alone; row {row}, block 0 bytes: {_hex(row_blocks[0])}"


def check_gemv(kernel: Checked, fmt: BlockFormat, w: np.ndarray, x: np.ndarray) -> Distance:
    """``w``: uint8 (rows, row_bytes); ``x``: float32 (row_weights,)."""
    expected = qk.gemv(w, x, fmt, backend="reference")
    actual = _as_array(kernel, fmt, _call(kernel, fmt, w.copy(), x.copy()), np.float32, expected.shape)
    return _check_rows(kernel, fmt, w, x, expected, actual, kernel.fn)


def check_vec_dot(kernel: Checked, fmt: BlockFormat, w: np.ndarray, x: np.ndarray) -> Distance:
    """``w``: uint8 (n_blocks, block_bytes), one row; ``x``: float32 (n_blocks * block_weights,)."""
    expected = np.float32([qk.vec_dot(w, x, fmt, backend="reference")])
    actual = np.float32([_scalar(kernel, fmt, _call(kernel, fmt, w.copy(), x.copy()))])
    return _check_rows(kernel, fmt, w.reshape(1, -1), x, expected, actual,
                       lambda w1, x1: np.float32([_scalar(kernel, fmt, kernel.fn(w1.reshape(-1, fmt.block_bytes),
                                                                                   x1))]))


def _scalar(kernel: Checked, fmt: BlockFormat, value: Any) -> float:
    """A vec_dot kernel's result: a float, or a one-value float array of any library."""
    array = np.float64(value) if isinstance(value, (float, np.floating)) else to_host(value)
    if array is None or np.size(array) != 1 or np.asarray(array).dtype.kind != "f":
        raise ConformanceError(f"kernel {kernel.name!r} ({fmt.name} vec_dot) returned {type(value).__name__}, "
                               "expected a float")
    return float(np.asarray(array).item())
