"""Importance matrices, as ``llama-imatrix`` makes them and ``llama-quantize --imatrix`` reads them.

:func:`collect` runs the reference forward pass (:class:`quantbench.gemma3.Gemma3`) over a text's
tokens and sums, for every weight matrix, the square of each input column over the tokens
(llama-imatrix's ``in_sum2``), with the number of tokens (its ``counts``). :func:`save` writes
llama.cpp's GGUF imatrix file (a tensor ``<matrix>.in_sum2`` and ``<matrix>.counts`` per matrix,
``general.type = imatrix``), atomically. :func:`load` reads that format and llama.cpp's older binary
one into the per-column means that the quantizers take (``quantbench_kernels.quantize(...,
imatrix=)``).
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import gguf
import numpy as np
from tqdm import tqdm

from .gguf_files import regular_file, replacing

GGUF_MAGIC = b"GGUF"


class ImatrixError(ValueError):
    """An importance-matrix file that cannot be read or used: names the file and what is wrong."""


@dataclass
class Importance:
    """Per weight matrix (by tensor name): the sum over tokens of each input column's square
    (float32 (columns,)) and the number of tokens; the text they came from."""

    sums: dict[str, np.ndarray] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    dataset: str = ""
    chunks: int = 0  # the text went through the model in this many chunks of ``chunk_size`` tokens
    chunk_size: int = 0

    def add(self, name: str, x: np.ndarray) -> None:
        """One token's input ``x`` (float32 (columns,)) to matrix ``name``: llama-imatrix's
        ``values[j] += x[j] * x[j]`` in float32, token after token."""
        total = self.sums.get(name)
        square = x * x
        self.sums[name] = square if total is None else total + square
        self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> dict[str, np.ndarray]:
        """Each matrix's per-column mean square: what llama-quantize hands the quantizers."""
        return {name: (s / np.float32(self.counts[name])).astype(np.float32) for name, s in self.sums.items()}


class _Observed:
    """A decode-step matrix whose every input is added to an :class:`Importance` first."""

    def __init__(self, matmul, importance: Importance) -> None:  # type: ignore[no-untyped-def]
        self.matmul, self.importance = matmul, importance

    def __call__(self, x: np.ndarray, threads: int | None) -> np.ndarray:
        self.importance.add(self.matmul.tensor.name, np.asarray(x, dtype=np.float32))
        return self.matmul(x, threads)


MATRICES = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


def collect(model, ids: Iterable[int], dataset: str = "", progress: bool = True) -> Importance:  # type: ignore[no-untyped-def]
    """The importance of every weight matrix of ``model`` (a :class:`quantbench.gemma3.Gemma3`) over
    the tokens ``ids``, fed one by one in chunks of the model's context, each from position 0 (as
    llama-imatrix feeds its chunks). The output matrix is included (Gemma 3 ties it to
    ``token_embd.weight``)."""
    ids = list(ids)
    size = model.context
    importance = Importance(dataset=dataset, chunks=-(-len(ids) // size), chunk_size=size)
    layers, output = model.layers, model.output
    model.layers = [replace(ly, **{m: _Observed(getattr(ly, m), importance) for m in MATRICES}) for ly in layers]
    model.output = _Observed(output, importance)
    try:
        for n, token in enumerate(tqdm(ids, desc="imatrix", unit="token", disable=not progress, file=sys.stderr)):
            if n % size == 0:
                model.reset()
            model.step(token)
    finally:
        model.layers, model.output = layers, output
    return importance


def save(importance: Importance, path: str | os.PathLike[str]) -> Path:
    """Write ``importance`` to ``path`` as llama.cpp's GGUF imatrix file, atomically: an
    interrupted or failed write leaves no file (and any earlier one as it was)."""
    path = Path(path)
    if not importance.sums:
        raise ImatrixError(f"imatrix {str(path)!r}: nothing to write (no tokens went through the model)")
    if path.is_dir() or not path.parent.is_dir():
        raise ImatrixError(f"imatrix {str(path)!r}: give a file's path in an existing directory")
    writer = gguf.GGUFWriter(None, "imatrix")
    writer.add_type("imatrix")
    writer.add_array("imatrix.datasets", [importance.dataset])
    writer.add_uint32("imatrix.chunk_count", importance.chunks)
    writer.add_uint32("imatrix.chunk_size", importance.chunk_size)
    for name in sorted(importance.sums):
        writer.add_tensor(f"{name}.in_sum2", importance.sums[name].astype(np.float32))
        writer.add_tensor(f"{name}.counts", np.array([importance.counts[name]], dtype=np.float32))
    with replacing(path) as tmp:
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        assert writer.fout is not None
        writer.fout[0].flush()
        os.fsync(writer.fout[0].fileno())
        writer.close()
    return path


def load(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Tensor name -> float32 per-column importance, from llama.cpp's GGUF imatrix file (sums over
    counts; a count of 0 gives 1.0, as llama.cpp) or its older binary one (values over ncall)."""
    path = Path(path)
    regular_file(path, "imatrix", ImatrixError)
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise ImatrixError(f"imatrix {str(path)!r}: {e.strerror or e}") from None
    try:
        return _load_gguf(path) if magic == GGUF_MAGIC else _load_legacy(path)
    except (ValueError, struct.error, OSError) as e:
        if isinstance(e, ImatrixError):
            raise
        raise ImatrixError(f"imatrix {str(path)!r} is not an importance matrix llama.cpp writes: {e}") from None


def _load_gguf(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(path)
    sums, counts = {}, {}
    for t in reader.tensors:
        if t.name.endswith(".in_sum2"):
            sums[t.name[: -len(".in_sum2")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
        elif t.name.endswith(".counts"):
            counts[t.name[: -len(".counts")]] = np.asarray(t.data, dtype=np.float32).reshape(-1)
    if not sums:
        raise ImatrixError(f"imatrix {str(path)!r}: a GGUF file without <matrix>.in_sum2 tensors")
    means = {}
    for name, s in sums.items():
        c = counts.get(name)
        if c is None or c.size < 1 or s.size % c.size:
            raise ImatrixError(f"imatrix {str(path)!r}: {name!r} has no counts matching its {s.size} sums")
        rows = s.reshape(c.size, -1)
        means[name] = np.where(c[:, None] > 0, rows / np.where(c > 0, c, 1)[:, None], np.float32(1)).reshape(-1)
    return {name: m.astype(np.float32) for name, m in means.items()}


def _load_legacy(path: Path) -> dict[str, np.ndarray]:
    data = path.read_bytes()
    at = 0

    def take(fmt: str) -> tuple:
        nonlocal at
        size = struct.calcsize(fmt)
        if at + size > len(data):
            raise ImatrixError(f"imatrix {str(path)!r} ends at byte {len(data)}, inside an entry")
        values = struct.unpack_from(fmt, data, at)
        at += size
        return values

    (n,) = take("<i")
    if not 1 <= n <= 1_000_000:
        raise ImatrixError(f"imatrix {str(path)!r}: {n} entries: not llama.cpp's binary imatrix format")
    means = {}
    for k in range(n):
        (length,) = take("<i")
        if not 1 <= length <= 4096:
            raise ImatrixError(f"imatrix {str(path)!r}: entry {k}'s name is {length} bytes long")
        name = take(f"<{length}s")[0].decode("utf-8", "replace")
        ncall, nval = take("<ii")
        if nval < 1:
            raise ImatrixError(f"imatrix {str(path)!r}: entry {name!r} has {nval} values")
        values = np.array(take(f"<{nval}f"), dtype=np.float32)
        means[name] = values / np.float32(ncall) if ncall > 0 else values
    return means
