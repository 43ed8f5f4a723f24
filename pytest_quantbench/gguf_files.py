"""Reading quantized tensors out of GGUF files, with clear errors for files that are not GGUF,
truncated or corrupt."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader


class GGUFFileError(ValueError):
    """A GGUF file could not be read: missing, not GGUF, truncated or corrupt."""


@dataclass(frozen=True)
class Tensor:
    """One tensor of a GGUF file. ``raw`` is its data as uint8 (rows, row_bytes); ``shape`` is
    (rows, row_weights) in weights."""

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, int]
    raw: np.ndarray


_CACHE: dict[tuple[str, float, int], list[Tensor]] = {}


def read_tensors(path: str | os.PathLike[str]) -> list[Tensor]:
    """Every tensor of the GGUF file at ``path`` (cached per file version for the session).

    Raises :class:`GGUFFileError` naming the file and the problem for anything that is not a
    readable, well-formed GGUF file: missing, a directory or other non-regular file (a FIFO is never
    opened, so nothing blocks), unreadable, not GGUF, truncated, corrupt, or holding a tensor whose
    shape does not fit its type or its data."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as err:
        raise GGUFFileError(f"GGUF file {str(path)!r} cannot be read: {err.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise GGUFFileError(f"GGUF file {str(path)!r} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise GGUFFileError(f"GGUF file {str(path)!r} is not a regular file (a pipe, socket or device)")
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    if key not in _CACHE:
        _CACHE[key] = _read(path, st.st_size)
    return _CACHE[key]


def _read(path: Path, size: int) -> list[Tensor]:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise GGUFFileError(f"GGUF file {str(path)!r} cannot be read: {err.strerror}") from None
    if magic != b"GGUF":
        raise GGUFFileError(f"{str(path)!r} is not a GGUF file (its first bytes are {magic!r}, not b'GGUF')")
    try:
        reader = GGUFReader(path)
    except Exception as err:  # gguf-py raises ValueError, IndexError, struct errors... on bad files
        raise GGUFFileError(
            f"GGUF file {str(path)!r} ({size} bytes) is truncated or corrupt: {type(err).__name__}: {err}"
        ) from None
    return [_tensor(path, t) for t in reader.tensors]


def _tensor(path: Path, t) -> Tensor:  # type: ignore[no-untyped-def]
    """One tensor as (rows, row_weights), or GGUFFileError naming what does not fit."""
    where = f"GGUF file {str(path)!r}: tensor {str(t.name)!r}"
    try:
        qtype = GGMLQuantizationType(int(t.tensor_type))
        block_weights, block_bytes = GGML_QUANT_SIZES[qtype]
    except (ValueError, KeyError):
        raise GGUFFileError(f"{where} has an unknown type id {int(t.tensor_type)}") from None
    dims = [int(d) for d in t.shape]
    weights = int(np.prod(dims, dtype=np.int64)) if dims else 0
    if not dims or min(dims) < 1 or weights < 1:
        raise GGUFFileError(f"{where} ({qtype.name}) has a degenerate shape {dims}")
    row_weights = dims[0]
    if row_weights % block_weights:
        raise GGUFFileError(f"{where} ({qtype.name}) has rows of {row_weights} weights, not a whole number of "
                            f"{block_weights}-weight blocks")
    row_bytes = row_weights // block_weights * block_bytes
    data = np.asarray(t.data)
    expected = weights // block_weights * block_bytes
    if data.nbytes != expected or int(t.n_bytes) != expected:
        raise GGUFFileError(f"{where} ({qtype.name}, shape {dims}) should hold {expected} bytes but the file gives "
                            f"{data.nbytes}: truncated or corrupt")
    raw = data.view(np.uint8).reshape(-1, row_bytes)
    return Tensor(str(t.name), qtype, (raw.shape[0], row_weights), raw)
