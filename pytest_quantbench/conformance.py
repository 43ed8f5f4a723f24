"""Checks that a kernel's output is bit-identical to the reference, with messages that show where.

Each check runs the kernel and the NumPy reference on the same input and raises
:class:`ConformanceError` naming the kernel, the format, the first differing block and weight (or
byte, or row), the block's bytes in hex, the expected and actual values with their bit patterns,
and how many values differ in all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

import quantbench_kernels as qk
from quantbench_kernels import BlockFormat

from .bitexact import first_difference

if TYPE_CHECKING:
    from .kernel import Kernel


class ConformanceError(AssertionError):
    """A kernel's output differs from the reference (or the kernel failed to produce one)."""


def _hex(raw: np.ndarray, limit: int = 400) -> str:
    text = np.ascontiguousarray(raw).tobytes().hex(" ")
    return text if len(text) <= limit * 3 else text[: limit * 3] + " ..."


def _call(kernel: Kernel, fmt: BlockFormat, *args: Any) -> Any:
    try:
        return kernel.fn(*args)
    except Exception as err:
        raise ConformanceError(
            f"kernel {kernel.name!r} ({fmt.name} {kernel.op}) raised {type(err).__name__}: {err}"
        ) from err


def _as_array(kernel: Kernel, fmt: BlockFormat, value: Any, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    what = f"kernel {kernel.name!r} ({fmt.name} {kernel.op})"
    if not isinstance(value, np.ndarray):
        raise ConformanceError(f"{what} returned {type(value).__name__}, expected a numpy array")
    if value.dtype != dtype:
        raise ConformanceError(f"{what} returned dtype {value.dtype}, expected {np.dtype(dtype)}")
    if value.size != int(np.prod(shape)):
        raise ConformanceError(f"{what} returned shape {value.shape}, expected {shape}")
    return value.reshape(shape)


def _header(kernel: Kernel, fmt: BlockFormat) -> str:
    return f"kernel {kernel.name!r} ({fmt.name} {kernel.op}) is not bit-identical to the reference"


def _field_at(fmt: BlockFormat, offset: int) -> str:
    for name, (dtype, start) in fmt.block_dtype.fields.items():
        if start <= offset < start + dtype.itemsize:
            base = dtype.subdtype[0] if dtype.subdtype else dtype
            index = (offset - start) // base.itemsize
            return f"{name}[{index}]" if dtype.subdtype else name
    return "?"


def check_dequantize(kernel: Kernel, fmt: BlockFormat, raw: np.ndarray) -> None:
    """``raw``: uint8 (n_blocks, block_bytes)."""
    expected = qk.dequantize(raw, fmt, backend="reference")
    actual = _as_array(kernel, fmt, _call(kernel, fmt, raw.copy()), np.float32, expected.shape)
    m = first_difference(expected, actual)
    if m is not None:
        block, weight = m.index[0], m.index[1]
        raise ConformanceError(
            f"{_header(kernel, fmt)}: {m.n_different} of {m.n_total} weights differ\n"
            f"  first at block {block}, weight {weight}: expected {m.expected!r} (0x{m.expected_bits:08x}), "
            f"got {m.actual!r} (0x{m.actual_bits:08x})\n"
            f"  block {block} bytes: {_hex(raw[block])}"
        )


def check_quantize(kernel: Kernel, fmt: BlockFormat, x: np.ndarray) -> None:
    """``x``: float32 (n_weights,)."""
    expected = qk.quantize(x, fmt, backend="reference")
    actual = _as_array(kernel, fmt, _call(kernel, fmt, x.copy()), np.uint8, expected.shape)
    m = first_difference(expected, actual)
    if m is not None:
        block, offset = m.index
        raise ConformanceError(
            f"{_header(kernel, fmt)}: {m.n_different} of {m.n_total} bytes differ\n"
            f"  first at block {block}, byte {offset} ({_field_at(fmt, offset)}): "
            f"expected 0x{m.expected_bits:02x}, got 0x{m.actual_bits:02x}\n"
            f"  expected block {block}: {_hex(expected[block])}\n"
            f"  actual block {block}:   {_hex(actual[block])}\n"
            f"  input weights of block {block}: {x[block * fmt.block_weights:(block + 1) * fmt.block_weights]!r}"
        )


def _check_rows(kernel: Kernel, fmt: BlockFormat, w: np.ndarray, expected: np.ndarray, actual: np.ndarray) -> None:
    m = first_difference(expected, actual)
    if m is not None:
        row = m.index[0]
        blocks = w.reshape(w.shape[0], -1, fmt.block_bytes)[row]
        raise ConformanceError(
            f"{_header(kernel, fmt)}: {m.n_different} of {m.n_total} rows differ\n"
            f"  first at row {row}: expected {m.expected!r} (0x{m.expected_bits:08x}), "
            f"got {m.actual!r} (0x{m.actual_bits:08x})\n"
            f"  row {row}, block 0 bytes: {_hex(blocks[0])}"
        )


def check_gemv(kernel: Kernel, fmt: BlockFormat, w: np.ndarray, x: np.ndarray) -> None:
    """``w``: uint8 (rows, row_bytes); ``x``: float32 (row_weights,)."""
    expected = qk.gemv(w, x, fmt, backend="reference")
    actual = _as_array(kernel, fmt, _call(kernel, fmt, w.copy(), x.copy()), np.float32, expected.shape)
    _check_rows(kernel, fmt, w, expected, actual)


def check_vec_dot(kernel: Kernel, fmt: BlockFormat, w: np.ndarray, x: np.ndarray) -> None:
    """``w``: uint8 (n_blocks, block_bytes), one row; ``x``: float32 (n_blocks * block_weights,)."""
    expected = np.float32([qk.vec_dot(w, x, fmt, backend="reference")])
    value = _call(kernel, fmt, w.copy(), x.copy())
    if not isinstance(value, (float, np.floating)):
        raise ConformanceError(f"kernel {kernel.name!r} ({fmt.name} vec_dot) returned {type(value).__name__}, "
                               "expected a float")
    _check_rows(kernel, fmt, w.reshape(1, -1), expected, np.float32([value]))
