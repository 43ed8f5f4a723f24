"""Stored runs: their files, their schema and its validation.

A stored baseline is one JSON file, ``<storage>/<NAME>.json``: the format version, the machine
(CPU model, cores, architecture, system, from py-cpuinfo, which pytest-benchmark already brings)
and the last few runs saved under that name (``--quantbench-keep``), each with when it was made
and every benchmark's tags, rounds (seconds per call) and the probes timed in between them::

    {"version": 2, "machine": {"cpu": str, "cores": int, "arch": str, "system": str},
     "runs": [{"created": "...",
               "benchmarks": [{"key": "impl|format|op|size", "info": {...}, "rounds": [float, ...],
                               "paired": {"memory": [float, ...], "compute": [float, ...]}}, ...]}, ...]}

(``paired[name]`` holds one more time than ``rounds``: round i ran between its times i and i + 1.
Version 1 files, one run without ``paired``, are read as a baseline of one run.)

A save adds its run to the stored ones under a lock and rewrites the file atomically: a unique
temporary file in the same folder, flushed to disk, then renamed over the old one, so a reader
sees the old file or the new one, never a part, and two concurrent saves both land. Everything
read back is validated; a file that does not validate raises :class:`StorageError` naming the
file, the entry and what is wrong, and is never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import Any

from filelock import FileLock

from quantbench.gguf_files import remove_stale_temporaries, replaceable, temporary_beside, with_open_mode

from .findings import Measurement

VERSION = 2
READABLE_VERSIONS = (1, 2)
TEMPORARY = ".tmp"  # the suffix of a save's temporary file (.<name>.json.<pid>.<random>.tmp)
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


def _entry(m: Measurement) -> dict:
    entry = {"key": m.key, "info": m.info, "rounds": [float(t) for t in m.rounds]}
    if m.paired:
        entry["paired"] = {name: [float(t) for t in times] for name, times in m.paired.items()}
    return entry


def snapshot(measurements: list[Measurement]) -> dict:
    """A stored baseline holding one run, ``measurements``, stamped with this machine and the time."""
    run = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "benchmarks": [_entry(m) for m in measurements]}
    return {"version": VERSION, "machine": machine(), "runs": [run]}


def valid_name(name: str) -> bool:
    """Whether ``name`` can name a stored run (and so a file): see :data:`NAME_RULE`."""
    return isinstance(name, str) and NAME.fullmatch(name) is not None


def path_of(directory: Path, name: str) -> Path:
    return directory / f"{name}.json"


def save(directory: Path, name: str, snap: dict, *, keep: int = 1, removed: list[str] | None = None) -> Path:
    """Add the runs of ``snap`` to the stored baseline ``name``, which then keeps its last ``keep``
    runs (1: ``snap`` replaces it). Raises StorageError if the stored file cannot be read or holds
    another machine's runs (it is left as it is), OSError if the disk says no. The temporary files
    that killed saves of ``name`` left are removed (under the lock), a line each added to ``removed``."""
    path = path_of(directory, name)
    with FileLock(directory / f".{name}.lock"):
        lines = remove_stale_temporaries(path, TEMPORARY)
        if removed is not None:
            removed.extend(lines)
        runs = []
        if not replaceable(path):
            raise StorageError(f"stored run {path} is not a regular file (a link, directory, pipe or device): it is "
                               "left as it is; remove it or save under another name")
        if path.exists() and keep > 1:
            stored = load(path)
            if stored["machine"] != snap["machine"]:
                raise StorageError(f"stored run {path} holds runs of another machine ({stored['machine']}): save "
                                   "under another name, or with --quantbench-keep 1 to replace it")
            runs = stored["runs"]
        _write(directory, name, {**snap, "runs": (runs + snap["runs"])[-keep:]})
    return path


def _write(directory: Path, name: str, snap: dict) -> None:
    """Write ``snap`` as ``<directory>/<name>.json`` atomically (see the module docstring)."""
    path = path_of(directory, name)
    fd, tmp = temporary_beside(path, TEMPORARY)
    try:
        with_open_mode(tmp)
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


def _validate_benchmarks(benchmarks: Any, where_run: str) -> None:
    _need(isinstance(benchmarks, list) and len(benchmarks) > 0, f"{where_run}benchmarks",
          "is missing, not a list or empty")
    seen = set()
    for i, b in enumerate(benchmarks):
        where = f"{where_run}benchmarks[{i}]"
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
        paired = b.get("paired", {})
        _need(isinstance(paired, dict), f"{where}.paired", "is not an object")
        for name, times in paired.items():
            _need(isinstance(times, list) and len(times) == len(rounds) + 1, f"{where}.paired.{name}",
                  f"is not a list of {len(rounds) + 1} times (one more than the rounds)")
            for j, t in enumerate(times):
                _need(_positive_finite(t), f"{where}.paired.{name}[{j}]",
                      f"is {t!r}, not a positive finite number of seconds")


def validate(snap: Any) -> dict:
    """``snap`` if it is a well-formed stored baseline, else ValueError naming the first problem.
    A version 1 file (one run) comes back as a version 2 baseline of that one run; runs stored
    before the passes were called passes (``info["window"]``) are read pass by pass."""
    _need(isinstance(snap, dict), "the file", "is not a JSON object")
    version = snap.get("version")
    _need(version in READABLE_VERSIONS, "version", f"is {version!r}, expected one of {READABLE_VERSIONS}")
    m = snap.get("machine")
    _need(isinstance(m, dict), "machine", "is missing or not an object")
    for field, kind in (("cpu", str), ("cores", int), ("arch", str), ("system", str)):
        _need(isinstance(m.get(field), kind), f"machine.{field}", f"is missing or not a {kind.__name__}")
    if version == 1:
        _validate_benchmarks(snap.get("benchmarks"), "")
        return {"version": VERSION, "machine": m,
                "runs": [{"created": str(snap.get("created", "")), "benchmarks": snap["benchmarks"]}]}
    runs = snap.get("runs")
    _need(isinstance(runs, list) and len(runs) > 0, "runs", "is missing, not a list or empty")
    for r, run in enumerate(runs):
        _need(isinstance(run, dict), f"runs[{r}]", "is not an object")
        _validate_benchmarks(run.get("benchmarks"), f"runs[{r}].")
    return snap


def load(path: Path) -> dict:
    """The validated stored run at ``path``; StorageError naming the file and the problem."""
    try:
        size = _regular(path).st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"the file is {size} bytes, larger than any stored run ({MAX_FILE_BYTES})")
        with open(path, "rb") as f:
            return validate(json.loads(f.read()))
    except (OSError, ValueError, RecursionError, OverflowError) as err:  # Overflow: 1e400 or a 400-digit number
        raise StorageError(f"stored run {path} is unreadable or corrupt: {err}") from None


def _regular(path: Path) -> os.stat_result:
    """The status of ``path`` (a link followed), or ValueError unless it is a regular file: a FIFO
    would block the read, a device (a link to /dev/zero) never end it."""
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ValueError("not a regular file (a directory, pipe, socket or device, or a link to one): a stored run "
                         "is a JSON file")
    return st
