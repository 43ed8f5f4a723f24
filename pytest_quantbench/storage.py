"""Stored runs: their files, their schema and its validation.

A stored run is one JSON file, ``<storage>/<NAME>.json``: the format version, when it was made,
the machine (CPU model, cores, architecture, system, from py-cpuinfo, which pytest-benchmark
already brings) and every benchmark's tags and rounds (seconds per call)::

    {"version": 1, "created": "...", "machine": {"cpu": str, "cores": int, "arch": str, "system": str},
     "benchmarks": [{"key": "impl|format|op|size", "info": {...}, "rounds": [float, ...]}, ...]}

Files are written atomically: a unique temporary file in the same folder, flushed to disk, then
renamed over the old one, so a reader (or a concurrent writer) sees the old file or the new one,
never a part. Everything read back is validated; a file that does not validate raises
:class:`StorageError` naming the file, the entry and what is wrong.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from .record import Measurement

VERSION = 1
MAX_FILE_BYTES = 256 << 20  # a stored run is a few MB; anything far larger is not one
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_RULE = "1-100 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
INFO_FIELDS = {"impl": str, "format": str, "op": str, "size": str, "pass": int, "weights": int, "bytes": int}


class StorageError(Exception):
    """A stored run that cannot be used: missing, unreadable, corrupt, or not a stored run."""


def machine() -> dict:
    """What must match for two runs to be comparable: CPU model, cores, architecture, system."""
    import cpuinfo  # py-cpuinfo, a dependency of pytest-benchmark; imported here: it takes ~0.2 s

    info = cpuinfo.get_cpu_info()
    return {
        "cpu": str(info.get("brand_raw") or platform.processor() or "unknown"),
        "cores": int(info.get("count") or os.cpu_count() or 0),
        "arch": platform.machine(),
        "system": platform.system(),
    }


def snapshot(measurements: list[Measurement]) -> dict:
    """A stored run of ``measurements``, stamped with this machine and the time."""
    return {
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "benchmarks": [{"key": m.key, "info": m.info, "rounds": [float(t) for t in m.rounds]} for m in measurements],
    }


def valid_name(name: str) -> bool:
    """Whether ``name`` can name a stored run (and so a file): see :data:`NAME_RULE`."""
    return isinstance(name, str) and NAME.fullmatch(name) is not None


def path_of(directory: Path, name: str) -> Path:
    return directory / f"{name}.json"


def save(directory: Path, name: str, snap: dict) -> Path:
    """Write ``snap`` as the stored run ``name``, atomically. Raises OSError if the disk says no."""
    path = path_of(directory, name)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(snap, f, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where the system allows it
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def prepare_directory(directory: Path, writable: bool) -> None:
    """Create ``directory`` if needed and prove it usable (writable: by writing a file in it).
    Raises OSError naming the problem."""
    directory.mkdir(parents=True, exist_ok=True)
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    if writable:
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=directory)
        os.close(fd)
        os.unlink(probe)


def stored_names(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []


def resolve(directory: Path, name: str) -> Path:
    """The stored run called ``name``, or the latest stored one for "latest"."""
    if name == "latest":
        runs = [p for p in directory.glob("*.json") if p.is_file()] if directory.is_dir() else []
        if not runs:
            raise StorageError(f"no stored quantbench runs in {directory}: save one first with --quantbench-save NAME")
        return max(runs, key=lambda p: p.stat().st_mtime)
    path = path_of(directory, name)
    if not path.is_file():
        known = ", ".join(stored_names(directory))
        raise StorageError(f"no stored quantbench run {name!r} in {directory} (stored: {known or 'none'})")
    return path


def _need(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ValueError(f"{where}: {what}")


def _positive_finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def validate(snap: Any) -> dict:
    """``snap`` if it is a well-formed stored run, else ValueError naming the first problem. Runs
    stored before the passes were called passes (``info["window"]``) are read pass by pass."""
    _need(isinstance(snap, dict), "the file", "is not a JSON object")
    _need(snap.get("version") == VERSION, "version", f"is {snap.get('version')!r}, expected {VERSION}")
    m = snap.get("machine")
    _need(isinstance(m, dict), "machine", "is missing or not an object")
    for field, kind in (("cpu", str), ("cores", int), ("arch", str), ("system", str)):
        _need(isinstance(m.get(field), kind), f"machine.{field}", f"is missing or not a {kind.__name__}")
    benchmarks = snap.get("benchmarks")
    _need(isinstance(benchmarks, list) and len(benchmarks) > 0, "benchmarks", "is missing, not a list or empty")
    seen = set()
    for i, b in enumerate(benchmarks):
        where = f"benchmarks[{i}]"
        _need(isinstance(b, dict), where, "is not an object")
        info = b.get("info")
        _need(isinstance(info, dict), f"{where}.info", "is missing or not an object")
        if "window" in info:
            info.setdefault("pass", info.pop("window"))
        info.setdefault("pass", 0)
        for field, kind in INFO_FIELDS.items():
            v = info.get(field)
            _need(isinstance(v, kind) and not isinstance(v, bool), f"{where}.info.{field}",
                  f"is {v!r}, not a {kind.__name__}")
        _need(info["pass"] >= 0 and info["weights"] > 0 and info["bytes"] > 0, f"{where}.info",
              "has a negative pass or a non-positive weights or bytes")
        key = f"{info['impl']}|{info['format']}|{info['op']}|{info['size']}"
        _need(b.get("key") == key, f"{where}.key", f"is {b.get('key')!r}, its info says {key!r}")
        _need((key, info["pass"]) not in seen, f"{where}.key", f"{key!r} appears twice in pass {info['pass']}")
        seen.add((key, info["pass"]))
        rounds = b.get("rounds")
        _need(isinstance(rounds, list) and len(rounds) > 0, f"{where}.rounds", "is missing, not a list or empty")
        for j, t in enumerate(rounds):
            _need(_positive_finite(t), f"{where}.rounds[{j}]", f"is {t!r}, not a positive finite number of seconds")
    return snap


def load(path: Path) -> dict:
    """The validated stored run at ``path``; StorageError naming the file and the problem."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"the file is {size} bytes, larger than any stored run ({MAX_FILE_BYTES})")
        with open(path, "rb") as f:
            return validate(json.loads(f.read()))
    except (OSError, ValueError, RecursionError) as err:
        raise StorageError(f"stored run {path} is unreadable or corrupt: {err}") from None
