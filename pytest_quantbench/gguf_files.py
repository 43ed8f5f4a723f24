"""Reading quantized tensors out of GGUF files, with clear errors for files that are not GGUF,
truncated or corrupt."""

from __future__ import annotations

import os
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
    """Every tensor of the GGUF file at ``path`` (cached per file version for the session)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as err:
        raise GGUFFileError(f"GGUF file {str(path)!r} cannot be read: {err.strerror}") from None
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    if key not in _CACHE:
        _CACHE[key] = _read(path, st.st_size)
    return _CACHE[key]


def _read(path: Path, size: int) -> list[Tensor]:
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise GGUFFileError(f"{str(path)!r} is not a GGUF file (its first bytes are {magic!r}, not b'GGUF')")
    try:
        reader = GGUFReader(path)
    except Exception as err:  # gguf-py raises ValueError, IndexError, struct errors... on bad files
        raise GGUFFileError(
            f"GGUF file {str(path)!r} ({size} bytes) is truncated or corrupt: {type(err).__name__}: {err}"
        ) from None
    tensors = []
    for t in reader.tensors:
        qtype = GGMLQuantizationType(int(t.tensor_type))
        row_weights = int(t.shape[0])
        block_weights, block_bytes = GGML_QUANT_SIZES[qtype]
        row_bytes = row_weights // block_weights * block_bytes
        data = np.asarray(t.data)
        if data.nbytes != int(t.n_bytes) or row_weights % block_weights:
            raise GGUFFileError(
                f"GGUF file {str(path)!r}: tensor {t.name!r} ({qtype.name}, {int(t.n_bytes)} bytes) "
                f"does not fit the file: truncated or corrupt"
            )
        raw = data.view(np.uint8).reshape(-1, row_bytes)
        tensors.append(Tensor(str(t.name), qtype, (raw.shape[0], row_weights), raw))
    return tensors
