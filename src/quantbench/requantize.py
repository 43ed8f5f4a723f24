"""``quantbench requantize``: a GGUF file rewritten under a quantization policy (:mod:`policy`).

Each tensor is decoded from what the file holds and quantized with this package's kernels, one
tensor at a time, straight into the output (gguf-py's ``GGUFWriter`` in its streaming mode: the
header and tensor table first, then each tensor's data as it is made), so memory holds about one
tensor. Every metadata item is copied (the vocabulary included); ``general.file_type`` says the
new main type. The output appears only complete: it is written to a temporary file beside it and
renamed over it at the end, so an interrupted run leaves the old OUT (or none), never half of one.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import gguf
import numpy as np
from tqdm import tqdm

import quantbench_kernels as qk

from .gguf_files import GGUFFileError, read_file_header, read_tensors, replacing
from .gguf_header import EVERY_ARRAY, Header
from .imatrix import load as load_imatrix
from .policy import Choice, Policy, PolicyError, file_type, plan


def encode(choice: Choice, threads: int | None = None, importance: np.ndarray | None = None) -> np.ndarray:
    """The tensor's bytes as written under the policy (uint8, 1-D): the file's own bytes when its
    type is kept, else its decoded weights quantized to the target type, weighted by
    ``importance`` (its importance-matrix entry, one value per column) when given. Raises
    PolicyError for a tensor holding non-finite weights, which no quantizer takes."""
    if not choice.changed:
        return np.asarray(choice.tensor.raw).reshape(-1)
    x = choice.tensor.to_float32()
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x.reshape(-1)))[0])
        raise PolicyError(f"tensor {choice.tensor.name!r} ({choice.source}) holds a non-finite weight "
                          f"(weight {bad}: {x.reshape(-1)[bad]}); it cannot be requantized to {choice.target}")
    return qk.quantize(x, choice.target, imatrix=importance, threads=threads).reshape(-1)


def importance_for(choices: list[Choice], imatrix: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Each requantized tensor's entry of ``imatrix`` (from the file ``source``). Raises PolicyError
    naming a requantized tensor the file has no entry for, or one of another length than its rows."""
    entries = {}
    for c in choices:
        if not c.changed:
            continue
        name, columns = c.tensor.name, c.tensor.shape[1]
        w = imatrix.get(name)
        if w is None:
            raise PolicyError(f"the importance matrix {source!r} has no entry for {name!r} ({len(imatrix)} entries), "
                              f"which the policy requantizes to {c.target}")
        if w.size != columns or not np.isfinite(w).all():
            raise PolicyError(f"the importance matrix {source!r} gives {name!r} {w.size} values"
                              + ("" if w.size != columns else " not all finite")
                              + f"; its rows have {columns} weights")
        entries[name] = w
    return entries


def _metadata(header: Header) -> list[tuple[str, object, gguf.GGUFValueType, gguf.GGUFValueType | None]]:
    """Every metadata item of a header read with every array (key, value, type, array element
    type), in file order."""
    return [(key, value, gguf.GGUFValueType(header.value_types[key][0]),
             None if header.value_types[key][1] is None else gguf.GGUFValueType(header.value_types[key][1]))
            for key, value in header.metadata.items()]


def requantize(src: str | os.PathLike[str], dst: str | os.PathLike[str], policy: Policy, *,
               threads: int | None = None, progress: bool = True,
               imatrix: str | os.PathLike[str] | None = None) -> list[Choice]:
    """Write ``dst``: the GGUF file ``src`` with its matrices requantized under ``policy`` (weighted
    by the importance matrix in the file ``imatrix`` when given, as ``llama-quantize --imatrix``).
    Returns what was done to each tensor, in file order. Raises GGUFFileError for an unreadable
    ``src`` or an unusable ``dst``, PolicyError for a policy the file cannot take (nothing is
    written then)."""
    src, dst = Path(src), Path(dst)
    tensors = read_tensors(src)
    if dst.exists() and (dst.is_dir() or dst.resolve() == src.resolve()):
        what = "a directory" if dst.is_dir() else "the input file itself"
        raise GGUFFileError(f"output {str(dst)!r} is {what}: give a new file's path")
    if not dst.parent.is_dir():
        raise GGUFFileError(f"output {str(dst)!r}: its directory {str(dst.parent)!r} does not exist")
    choices = plan(tensors, policy)
    importance = {} if imatrix is None else importance_for(choices, load_imatrix(imatrix), str(imatrix))
    header = read_file_header(src, EVERY_ARRAY)
    dims = {t.name: tuple(reversed(t.shape)) for t in header.tensors}  # NumPy order: rows first

    writer = gguf.GGUFWriter(None, str(header.metadata.get("general.architecture", "")))
    for key, value, vtype, sub in _metadata(header):
        if key == "general.architecture":
            continue  # the writer adds it
        if key == "general.file_type":
            value = file_type(choices, int(value))
        if key == "general.alignment":
            writer.data_alignment = int(value)
        writer.add_key_value(key, value, vtype, sub)
    if "general.file_type" not in header.metadata and any(c.changed for c in choices):
        writer.add_file_type(file_type(choices, None))
    for c in choices:
        # The shape in weights with the type it is written in (the dtype argument only says the
        # shape is not in bytes).
        writer.add_tensor_info(c.tensor.name, dims[c.tensor.name], np.dtype(np.float32), c.nbytes,
                               raw_dtype=gguf.GGMLQuantizationType[c.target])

    total = sum(c.nbytes for c in choices)
    with replacing(dst) as tmp:
        writer.write_header_to_file(tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"requantize {dst.name}", disable=not progress,
                   file=sys.stderr)
        try:
            for n, c in enumerate(choices, 1):
                writer.write_tensor_data(encode(c, threads, importance.get(c.tensor.name)))
                bar.set_postfix_str(f"tensor {n}/{len(choices)}", refresh=False)
                bar.update(c.nbytes)
            assert writer.fout is not None
            writer.fout[0].flush()
            os.fsync(writer.fout[0].fileno())
        finally:
            bar.close()
            writer.close()
    return choices
