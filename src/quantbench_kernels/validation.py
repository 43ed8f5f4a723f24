"""Input checks that run before any kernel: Numba does not check bounds, so a wrong shape or dtype
must be refused here with a message that names the problem, never reach compiled code."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .registry import BlockFormat

_UINT8 = np.dtype(np.uint8)


def as_bytes(raw: Any, what: str) -> np.ndarray:
    """``raw`` as a C-contiguous uint8 array (bytes-like objects are accepted as 1-D)."""
    if type(raw) is np.ndarray and raw.dtype is _UINT8 and raw.ndim and raw.flags.c_contiguous:
        return raw  # already so, in one test (the checks below cost half a microsecond)
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = np.frombuffer(raw, dtype=np.uint8)
    if isinstance(raw, np.generic):
        raw = np.asarray(raw)
    if not isinstance(raw, np.ndarray):
        raise ValueError(f"{what} must be a uint8 numpy array or bytes, got {type(raw).__name__}")
    if raw.dtype != np.uint8:
        raise ValueError(f"{what} must have dtype uint8 (raw block bytes), got dtype {raw.dtype}")
    if raw.ndim == 0:
        raise ValueError(f"{what} must have at least one dimension, got a 0-d array")
    return np.ascontiguousarray(raw)


def as_float32(x: Any, what: str, ndims: tuple[int, ...]) -> np.ndarray:
    """``x`` as a C-contiguous float32 array with one of ``ndims`` dimensions and only finite values."""
    if isinstance(x, np.generic):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{what} must be a float32 numpy array, got {type(x).__name__}")
    if x.dtype != np.float32:
        raise ValueError(f"{what} must have dtype float32, got dtype {x.dtype} (convert with .astype(np.float32))")
    if x.ndim not in ndims:
        allowed = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{what} must be {allowed}, got shape {x.shape}")
    # x . x is finite exactly when every value is, unless the finite values overflow it: one BLAS
    # call (about 0.5 us) instead of two ufuncs (3 us on a 640-value activation), and the exact
    # test only when the dot product is not finite.
    if not math.isfinite(np.vdot(x, x)) and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))[0]
        index = tuple(int(i) for i in bad)
        raise ValueError(
            f"{what} contains non-finite values (NaN or inf), first at index "
            f"{index[0] if len(index) == 1 else index}: {x[tuple(bad)]!r}"
        )
    return np.ascontiguousarray(x)


def check_whole_blocks(raw: np.ndarray, fmt: BlockFormat, what: str) -> int:
    """Number of blocks in the last dimension of ``raw``, which must be a whole number of blocks."""
    n = raw.shape[-1]
    if n % fmt.block_bytes:
        raise ValueError(
            f"{what} has a last dimension of {n} bytes, not a whole number of {fmt.name} blocks "
            f"({fmt.block_bytes} bytes per {fmt.block_weights} weights)"
        )
    return n // fmt.block_bytes


def check_row_length(x: np.ndarray, fmt: BlockFormat, what: str) -> int:
    """Number of blocks in the last dimension of ``x``, which must be a multiple of the block size."""
    n = x.shape[-1]
    if n % fmt.block_weights:
        raise ValueError(
            f"{what} has a row length of {n} values, not a multiple of the {fmt.name} block size "
            f"({fmt.block_weights} weights)"
        )
    return n // fmt.block_weights


def check_out(out: Any, shape: tuple[int, ...], *inputs: np.ndarray) -> None:
    """``out`` must be a writeable, C-contiguous float32 array of exactly ``shape`` that shares no
    memory with ``inputs`` (a kernel writing over its own input reads what it already wrote)."""
    if not isinstance(out, np.ndarray) or out.dtype != np.float32:
        kind = f"dtype {out.dtype}" if isinstance(out, np.ndarray) else type(out).__name__
        raise ValueError(f"out must be a float32 numpy array, got {kind}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, the result has shape {shape}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be C-contiguous and writeable")
    for inp in inputs:
        if np.shares_memory(out, inp):
            raise ValueError("out shares memory with the input: pass a separate output buffer")
