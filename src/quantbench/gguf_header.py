"""A GGUF file's header read directly: metadata and tensor table, without the tensors' data.

gguf-py's ``GGUFReader`` builds a NumPy view per metadata item, so a model with a 262,144-entry
vocabulary takes seconds to open; reading the header with ``struct`` skips the arrays it does not
need. The enums and block sizes stay gguf-py's (``GGMLQuantizationType``, ``GGML_QUANT_SIZES``).

Layout (little-endian; GGUF versions 2 and 3)::

    magic "GGUF" | version u32 | tensor_count u64 | kv_count u64
    kv_count x  (key: string | value_type u32 | value)
    tensor_count x  (name: string | n_dims u32 | dims u64 x n_dims | type u32 | offset u64)
    padding to general.alignment (default 32) | tensor data (offsets relative to its start)

    string = length u64 | bytes;  array value = element_type u32 | count u64 | elements

Every count and length is checked against the bytes left before it is used, so a corrupt header
can neither allocate more than the file holds nor loop past its end: anything wrong is a
:class:`GGUFHeaderError` naming the problem and its byte offset. Keys and tensor names longer than
the GGUF specification allows (65,535 and 64 bytes) are refused before they are read; a string
value longer than MAX_KEPT_STRING is skipped unread, as a long array is (its length kept), unless
its key is asked for whole; an array's string item longer than that is refused when the array is
asked for whole (a vocabulary), else the array is summarised; names are shown at most SHOWN
characters long in messages. So a length field near a (sparse) file's size costs nothing but the
bytes really asked for.
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
# Value types: struct format of the scalars; 8 is a string, 9 an array.
SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY = 8, 9
# Arrays longer than this are summarised (their length), not returned: a vocabulary.
MAX_KEPT_ARRAY = 64
# String values longer than this are summarised (their byte count), not read: a chat template is
# a few kilobytes; only a corrupt length or a hostile file reaches this.
MAX_KEPT_STRING = 1 << 16
# The GGUF specification's limits: a key at most 65,535 bytes, a tensor name at most 64.
MAX_KEY_BYTES = (1 << 16) - 1
MAX_NAME_BYTES = 64
SHOWN = 60  # characters of a key or a name in a message


class GGUFHeaderError(ValueError):
    """A GGUF header that cannot be read: the message names the problem and its byte offset."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the table: its name, type, shape (GGUF order: the row length first), the byte
    offset of its data in the file, and its size in bytes."""

    name: str
    qtype: GGMLQuantizationType
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def weights(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.nbytes / self.weights if self.weights else 0.0


@dataclass(frozen=True)
class Header:
    """The metadata (arrays of more than MAX_KEPT_ARRAY items as their length) and the tensors."""

    version: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    file_bytes: int
    array_lengths: dict[str, int] = field(default_factory=dict)
    # String values not read (longer than MAX_KEPT_STRING): their byte count.
    string_lengths: dict[str, int] = field(default_factory=dict)
    # Each metadata item's GGUF value type, and its element type for an array (else None).
    value_types: dict[str, tuple[int, int | None]] = field(default_factory=dict)


class _Every:
    """Every key: ``read_header(path, whole=EVERY_ARRAY)`` returns every array whole."""

    def __contains__(self, key: object) -> bool:
        return True


EVERY_ARRAY: Container[str] = _Every()


class _Cursor:
    def __init__(self, data: bytes | mmap.mmap) -> None:
        self.data = data
        self.pos = 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise GGUFHeaderError(f"truncated: {what} at byte {self.pos} needs {n} bytes, "
                                  f"{len(self.data) - self.pos} are left")

    def unpack(self, fmt: str, what: str) -> Any:
        size = struct.calcsize("<" + fmt)
        self.need(size, what)
        value = struct.unpack_from("<" + fmt, self.data, self.pos)[0]
        self.pos += size
        return value

    def string(self, what: str, limit: int | None = None, rule: str = "") -> str:
        """A string; one longer than ``limit`` bytes is refused (``rule`` says whose limit) unread."""
        start = self.pos
        n = self.unpack("Q", f"the length of {what}")
        if limit is not None and n > limit:
            raise GGUFHeaderError(f"{what} at byte {start} is {n} bytes long, more than {rule}")
        return self._text(start, n, what)

    def string_or_length(self, what: str) -> tuple[str | None, int]:
        """A string value up to MAX_KEPT_STRING bytes, else (None, its length), skipped unread."""
        start = self.pos
        n = self.unpack("Q", f"the length of {what}")
        if n <= MAX_KEPT_STRING:
            return self._text(start, n, what), n
        self.need(n, what)
        self.pos += n
        return None, n

    def _text(self, start: int, n: int, what: str) -> str:
        """The ``n`` bytes at the cursor as UTF-8 (``start``: where their length field began)."""
        self.need(n, what)
        raw = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFHeaderError(f"{what} at byte {start} is not UTF-8") from None

    def skip_strings(self, count: int, what: str) -> None:
        for _ in range(count):
            n = self.unpack("Q", f"the length of an item of {what}")
            self.need(n, f"an item of {what}")
            self.pos += n


def _shown(name: str) -> str:
    """``repr(name)``, cut to about SHOWN characters: a hostile file's names stay out of messages."""
    return repr(name) if len(name) <= SHOWN else repr(name[:SHOWN]) + f"... ({len(name)} characters)"


def _value(c: _Cursor, vtype: int, key: str, lengths: dict[str, int], types: dict[str, tuple[int, int | None]],
           whole: bool = False, string_lengths: dict[str, int] | None = None) -> Any:
    types[key] = (vtype, None)
    shown = _shown(key)
    if vtype in SCALARS:
        return c.unpack(SCALARS[vtype], f"the value of {shown}")
    if vtype == STRING:
        if whole:
            return c.string(f"the value of {shown}")
        value, n = c.string_or_length(f"the value of {shown}")
        if value is None and string_lengths is not None:
            string_lengths[key] = n
        return value
    if vtype != ARRAY:
        raise GGUFHeaderError(f"unknown value type {vtype} of {shown} at byte {c.pos - 4}")
    start = c.pos
    etype = c.unpack("I", f"the element type of {shown}")
    types[key] = (vtype, etype)
    count = c.unpack("Q", f"the length of {shown}")
    if etype in SCALARS:
        size = struct.calcsize("<" + SCALARS[etype])
        c.need(count * size, f"the {count} items of {shown}")
        if count > MAX_KEPT_ARRAY and not whole:
            c.pos += count * size
            lengths[key] = count
            return None
        items = np.frombuffer(c.data, "<" + SCALARS[etype], count, c.pos)
        c.pos += count * size
        return items.tolist()
    if etype == STRING:
        c.need(count * 8, f"the {count} strings of {shown}")  # each needs at least its length
        if count > MAX_KEPT_ARRAY and not whole:
            c.skip_strings(count, shown)
            lengths[key] = count
            return None
        if whole:  # a vocabulary: every item, none longer than a kept string (a token is a few bytes)
            return [c.string(f"an item of {shown}", MAX_KEPT_STRING, f"the {MAX_KEPT_STRING} this reader takes for "
                             "an item of an array") for _ in range(count)]
        items = []
        for i in range(count):
            item, _ = c.string_or_length(f"an item of {shown}")
            if item is None:  # an item too long to keep: the array is summarised, the rest skipped unread
                c.skip_strings(count - i - 1, shown)
                lengths[key] = count
                return None
            items.append(item)
        return items
    raise GGUFHeaderError(f"array {shown} at byte {start} has element type {etype}, which GGUF does not define "
                          "(nested arrays are not read)")


def _tensor(c: _Cursor) -> tuple[str, tuple[int, ...], int, int, int]:
    start = c.pos
    name = c.string(f"the name of the tensor at byte {start}", MAX_NAME_BYTES,
                    f"the {MAX_NAME_BYTES} the GGUF specification allows a tensor name")
    shown = _shown(name)
    n_dims = c.unpack("I", f"the dimensions of {shown}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise GGUFHeaderError(f"tensor {shown} at byte {start} has {n_dims} dimensions (1 to {MAX_DIMS} allowed)")
    shape = tuple(c.unpack("Q", f"a dimension of {shown}") for _ in range(n_dims))
    type_at = c.pos
    type_id = c.unpack("I", f"the type of {shown}")
    offset = c.unpack("Q", f"the data offset of {shown}")
    return name, shape, type_id, offset, type_at


def read_header(path: str | os.PathLike[str], whole: Container[str] = frozenset()) -> Header:
    """The header of the GGUF file at ``path``; the arrays named in ``whole`` are returned whatever
    their length (a tokenizer's vocabulary). Raises :class:`GGUFHeaderError` (also for a file
    that cannot be opened) naming what is wrong and where."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise GGUFHeaderError("the file is empty (byte 0)")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _parse(data, size, whole)
    except OSError as err:
        raise GGUFHeaderError(f"cannot read it: {err.strerror or err}") from None


def parse_header(data: bytes) -> Header:
    """The header of a GGUF file held in memory (``bytes``): as :func:`read_header`."""
    if not data:
        raise GGUFHeaderError("the file is empty (byte 0)")
    return _parse(data, len(data))


def _parse(data: bytes | mmap.mmap, size: int, whole: Container[str] = frozenset()) -> Header:
    c = _Cursor(data)
    c.need(4, "the magic")
    if bytes(data[:4]) != MAGIC:
        raise GGUFHeaderError(f"not a GGUF file: magic {bytes(data[:4])!r} at byte 0, expected {MAGIC!r}")
    c.pos = 4
    version = c.unpack("I", "the version")
    if version not in VERSIONS:
        if int.from_bytes(version.to_bytes(4, "little"), "big") in VERSIONS:
            raise GGUFHeaderError(f"a big-endian GGUF file (its version at byte 4 reads "
                                  f"{int.from_bytes(version.to_bytes(4, 'little'), 'big')} byte-swapped): "
                                  "this reads little-endian files, as llama.cpp writes them on x86 and ARM")
        raise GGUFHeaderError(f"unknown GGUF version {version} at byte 4 (this reads {VERSIONS})")
    n_tensors = c.unpack("Q", "the tensor count")
    n_kv = c.unpack("Q", "the metadata count")
    # Each metadata item takes at least 12 bytes and each tensor at least 28: counts beyond what
    # the file can hold are corrupt, and must not drive a loop.
    if n_kv * 12 > size - c.pos or n_tensors * 28 > size - c.pos:
        raise GGUFHeaderError(f"the counts at byte 8 ({n_tensors} tensors, {n_kv} metadata items) need more bytes "
                              f"than the {size} of the file")
    metadata: dict[str, Any] = {}
    lengths: dict[str, int] = {}
    types: dict[str, tuple[int, int | None]] = {}
    string_lengths: dict[str, int] = {}
    for _ in range(n_kv):
        key = c.string("a metadata key", MAX_KEY_BYTES, f"the {MAX_KEY_BYTES} the GGUF specification allows a key")
        vtype = c.unpack("I", f"the value type of {_shown(key)}")
        metadata[key] = _value(c, vtype, key, lengths, types, key in whole, string_lengths)
    raw_tensors = [_tensor(c) for _ in range(n_tensors)]
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
        raise GGUFHeaderError(f"general.alignment is {alignment!r}, not a power of two")
    data_start = -(-c.pos // alignment) * alignment
    tensors = []
    for name, shape, type_id, offset, type_at in raw_tensors:
        try:
            qtype = GGMLQuantizationType(type_id)
            block_weights, block_bytes = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise GGUFHeaderError(f"tensor {_shown(name)} has type id {type_id} at byte {type_at}, "
                                  "which gguf-py does not know") from None
        if shape[0] % block_weights:
            raise GGUFHeaderError(f"tensor {_shown(name)} ({qtype.name}) has rows of {shape[0]} weights, not a "
                                  f"multiple of its {block_weights}-weight blocks")
        n = 1
        for d in shape:
            n *= d
        nbytes = n // block_weights * block_bytes
        start = data_start + offset
        if start + nbytes > size:
            raise GGUFHeaderError(f"tensor {_shown(name)}: its {nbytes} bytes at byte {start} run past the end of "
                                  f"the file ({size} bytes)")
        tensors.append(TensorInfo(name, qtype, shape, start, nbytes))
    return Header(version, metadata, tensors, size, array_lengths=lengths, string_lengths=string_lengths,
                  value_types=types)
