"""Reading quantized tensors out of GGUF files (the header by :mod:`gguf_header`, the data as a
read-only map of the file), with clear errors for files that are not GGUF, truncated or corrupt."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Container, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize

from .gguf_header import GGUFHeaderError, Header, TensorInfo, read_header


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

    def to_float32(self) -> np.ndarray:
        """The weights as float32 (rows, row_weights): this package's dequantize for the formats it
        has, gguf-py's for the others (F32, F16, BF16, ...)."""
        import quantbench_kernels as qk  # noqa: PLC0415 (Numba: quantbench inspect never needs it)

        if self.qtype.name in {f.name for f in qk.formats()}:
            return qk.dequantize(np.asarray(self.raw), self.qtype.name).reshape(self.shape)
        return gguf_dequantize(np.asarray(self.raw), self.qtype).reshape(self.shape).astype(np.float32)


_CACHE: dict[tuple[str, float, int], list[Tensor]] = {}


def read_tensors(path: str | os.PathLike[str]) -> list[Tensor]:
    """Every tensor of the GGUF file at ``path`` (cached per file version for the session).

    Raises :class:`GGUFFileError` naming the file and the problem for anything that is not a
    readable, well-formed GGUF file: missing, a directory or other non-regular file (a FIFO is never
    opened, so nothing blocks), unreadable, not GGUF, truncated, corrupt, or holding a tensor whose
    shape does not fit its type or its data."""
    path = Path(path)
    st = _stat(path)
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    if key not in _CACHE:
        header = read_file_header(path)
        data = np.memmap(path, dtype=np.uint8, mode="r") if header.tensors else np.empty(0, np.uint8)
        _CACHE[key] = [_tensor(path, t, data) for t in header.tensors]
    return _CACHE[key]


def regular_file(path: Path, what: str, error: type[ValueError]) -> os.stat_result:
    """The status of ``path``, or ``error`` naming ``what`` it should be (say "GGUF file") and the
    file: missing or unreadable, a directory, or not a regular file (a FIFO is never opened, so
    nothing blocks)."""
    try:
        st = path.stat()
    except OSError as err:
        raise error(f"{what} {str(path)!r} cannot be read: {err.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {str(path)!r} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {str(path)!r} is not a regular file (a pipe, socket or device)")
    return st


def _stat(path: Path) -> os.stat_result:
    return regular_file(path, "GGUF file", GGUFFileError)


def read_file_header(path: str | os.PathLike[str], whole: Container[str] = frozenset()) -> Header:
    """The header of the GGUF file at ``path`` (``whole``: as :func:`gguf_header.read_header`),
    or :class:`GGUFFileError` naming the file and the problem, as :func:`read_tensors`."""
    path = Path(path)
    size = _stat(path).st_size
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        raise GGUFFileError(f"GGUF file {str(path)!r} cannot be read: {err.strerror}") from None
    if magic != b"GGUF":
        raise GGUFFileError(f"{str(path)!r} is not a GGUF file (its first bytes are {magic!r}, not b'GGUF')")
    try:
        return read_header(path, whole)
    except GGUFHeaderError as err:
        raise GGUFFileError(f"GGUF file {str(path)!r} ({size} bytes) is truncated or corrupt: {err}") from None


def _tensor(path: Path, t: TensorInfo, data: np.ndarray) -> Tensor:
    """One tensor as (rows, row_weights) over the file's read-only map, or GGUFFileError naming
    what does not fit (the header reader has checked its type, its rows and that its bytes are in
    the file)."""
    dims = list(t.shape)
    if min(dims) < 1:
        raise GGUFFileError(f"GGUF file {str(path)!r}: tensor {t.name!r} ({t.qtype.name}) has a degenerate shape "
                            f"{dims}")
    block_weights, block_bytes = GGML_QUANT_SIZES[t.qtype]
    row_bytes = dims[0] // block_weights * block_bytes
    raw = data[t.offset:t.offset + t.nbytes].reshape(-1, row_bytes)
    return Tensor(t.name, t.qtype, (raw.shape[0], dims[0]), raw)


PARTIAL = ".partial"  # the suffix of an output's temporary file


def with_open_mode(path: Path) -> None:
    """Give ``path`` the mode a plain ``open(path, "w")`` would (0666 less the umask): a temporary
    file from ``tempfile.mkstemp`` is private (0600), and the file it becomes should not be."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def replaceable(path: Path) -> bool:
    """Whether an output may be written at ``path``: nothing is there, or a regular file (not a
    link, whose target would go stale, nor a directory, pipe or device)."""
    return not os.path.lexists(path) or (path.is_file() and not path.is_symlink())


def temporary_beside(dst: Path, suffix: str) -> tuple[int, Path]:
    """A new temporary file in ``dst``'s folder, created exclusively (``mkstemp``: O_EXCL, so never
    through a link planted at its name), named ``.<dst name>.<this process's id>.<random><suffix>``
    so that a later run can tell a killed run's leftover (:func:`remove_stale_temporaries`) from a
    live run's. Returns its open descriptor and path."""
    fd, name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.{os.getpid()}.", suffix=suffix)
    return fd, Path(name)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError, OSError):
        return False
    return pid > 0


def remove_stale_temporaries(dst: Path, suffix: str) -> list[str]:
    """Remove the temporary files of :func:`temporary_beside` that runs killed before they could
    clean up left beside ``dst`` (SIGKILL, a power cut): regular files whose process is gone. A
    live run's are kept. Returns a line per file removed, naming it, its size and its process."""
    removed = []
    prefix = f".{dst.name}."
    try:
        entries = list(os.scandir(dst.parent))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(suffix)):
            continue
        pid = entry.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            size = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
        except OSError:
            continue
        removed.append(f"removed {entry.path} ({size} bytes), the temporary file of a run that was killed "
                       f"(process {pid} is gone)")
    return removed


@contextmanager
def replacing(dst: Path) -> Iterator[Path]:
    """A new temporary path beside ``dst`` (unique: concurrent runs never share one) that becomes
    ``dst`` atomically if the block succeeds, and is removed if it fails or is interrupted. Only a
    regular file at ``dst`` is replaced: a link, pipe or device there is GGUFFileError, before any
    work (replacing a link would leave its target stale, a device node would be lost). Killed runs'
    temporary files of ``dst`` are removed first, a line on standard error each."""
    if not replaceable(dst):
        raise GGUFFileError(f"output {str(dst)!r} is not a regular file (a link, directory, pipe or device): "
                            "it is left as it is; give a new file's path")
    for line in remove_stale_temporaries(dst, PARTIAL):
        print(f"quantbench: {line}", file=sys.stderr)
    fd, tmp = temporary_beside(dst, PARTIAL)
    os.close(fd)
    with_open_mode(tmp)
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
