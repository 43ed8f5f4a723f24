"""Bit-for-bit comparison of kernel output with the reference, and messages that say where."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mismatch:
    """The first differing value of two float32 (or uint8) arrays, and how many differ in all."""

    index: tuple[int, ...]
    expected: float
    actual: float
    expected_bits: int
    actual_bits: int
    n_different: int
    n_total: int

    def describe(self) -> str:
        return (
            f"{self.n_different} of {self.n_total} values differ; first at index {self.index}: "
            f"expected {self.expected!r} (0x{self.expected_bits:08x}), got {self.actual!r} (0x{self.actual_bits:08x})"
        )


def _bits(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.float32:
        return a.view(np.uint32)
    if a.dtype == np.uint8:
        return a.astype(np.uint32)
    raise TypeError(f"bit comparison needs float32 or uint8 arrays, got {a.dtype}")


def first_difference(expected: np.ndarray, actual: np.ndarray) -> Mismatch | None:
    """None if the arrays are bit-identical, NaNs being equal wherever both are NaN (any payload).

    Raises ValueError if the shapes or dtypes differ.
    """
    expected = np.ascontiguousarray(expected)
    actual = np.ascontiguousarray(actual)
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        raise ValueError(
            f"expected {expected.dtype}{list(expected.shape)}, got {actual.dtype}{list(actual.shape)}"
        )
    differ = _bits(expected) != _bits(actual)
    if expected.dtype == np.float32:
        differ &= ~(np.isnan(expected) & np.isnan(actual))
    count = int(differ.sum())
    if count == 0:
        return None
    index = tuple(int(i) for i in np.argwhere(differ)[0])
    return Mismatch(
        index=index,
        expected=expected[index].item(),
        actual=actual[index].item(),
        expected_bits=int(_bits(expected)[index]),
        actual_bits=int(_bits(actual)[index]),
        n_different=count,
        n_total=int(differ.size),
    )


def assert_bit_identical(expected: np.ndarray, actual: np.ndarray, what: str = "output") -> None:
    """Fail with the first difference unless the arrays are bit-identical (NaN positions equal)."""
    mismatch = first_difference(expected, actual)
    if mismatch is not None:
        raise AssertionError(f"{what} is not bit-identical to the reference: {mismatch.describe()}")
