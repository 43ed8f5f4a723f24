"""Kernels under test: the package's own Numba kernels and those a downstream project registers.

A kernel is one function for one op and one format. Its signature is that of the
``quantbench_kernels`` function of the op, without ``qtype`` and ``backend``:

    dequantize(raw: uint8 (n_blocks, block_bytes))      -> float32 (n_blocks, block_weights)
    quantize(x: float32 (n_weights,))                    -> uint8 (n_blocks, block_bytes)
    vec_dot(w_raw: uint8 (n_blocks, block_bytes), x)    -> float
    gemv(w_raw: uint8 (rows, row_bytes), x: float32)     -> float32 (rows,)
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest

import quantbench_kernels as qk

from .ops import OPS

BUILTIN = "quantbench-numba"


@dataclass(frozen=True)
class Kernel:
    """One kernel to prove bit-exact and to measure.

    ``name`` identifies it in test ids, tables and stored baselines; ``qtype`` is a registered
    format name ("Q4_K") or ``gguf.GGMLQuantizationType``; ``op`` is one of :data:`OPS`.
    Problems (an unknown op or format, a non-callable ``fn``) are reported by :meth:`problem`
    and become a failing test that names the kernel, rather than an error at registration.
    """

    name: str
    qtype: Any
    op: str
    fn: Callable[..., Any]

    @property
    def format_name(self) -> str:
        try:
            return qk.get_format(self.qtype).name
        except ValueError:
            return str(getattr(self.qtype, "name", self.qtype))

    @property
    def id(self) -> str:
        return f"{self.name}-{self.format_name}-{self.op}"

    def problem(self) -> str | None:
        """Why this kernel cannot be tested, or None."""
        if self.op not in OPS:
            return f"kernel {self.name!r}: unknown op {self.op!r}; the ops are {', '.join(OPS)}"
        try:
            fmt = qk.get_format(self.qtype)
        except ValueError as err:
            return f"kernel {self.name!r}: {err}"
        if not OPS[self.op].supported_by(fmt):
            return f"kernel {self.name!r}: format {fmt.name} has no reference {self.op} to check it against"
        if not callable(self.fn):
            return f"kernel {self.name!r}: fn is not callable ({type(self.fn).__name__})"
        return None


def builtin_kernels() -> list[Kernel]:
    """The package's own Numba kernels: every op that each registered format supports."""
    out = []
    for fmt in qk.formats():
        for op in OPS.values():
            if op.supported_by(fmt):
                out.append(Kernel(name=BUILTIN, qtype=fmt.name, op=op.name, fn=op.builtin(fmt)))
    return out


@dataclass(frozen=True)
class BadEntry:
    """A registration that could not even produce a Kernel (a bad ini line, a hook that raised)."""

    id: str
    message: str


def _as_kernels(value: Any, source: str) -> list[Kernel | BadEntry]:
    if isinstance(value, Kernel):
        return [value]
    if callable(value) and not isinstance(value, type):
        try:
            value = value()
        except Exception as err:  # noqa: BLE001 - reported as a failing test
            return [BadEntry(source, f"{source}: calling it raised {type(err).__name__}: {err}")]
        return _as_kernels(value, source)
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes)):
        out: list[Kernel | BadEntry] = []
        for item in value:
            out.extend(_as_kernels(item, source))
        return out
    return [BadEntry(source, f"{source}: expected pytest_quantbench.Kernel objects, got {type(value).__name__}")]


def from_ini_line(line: str) -> list[Kernel | BadEntry]:
    """Kernels named by one ``module:attribute`` line of the ``quantbench_kernels`` ini option."""
    module_name, sep, attr = line.strip().partition(":")
    if not sep or not module_name or not attr:
        return [BadEntry(line, f"quantbench_kernels line {line!r}: expected module:attribute")]
    try:
        module = importlib.import_module(module_name)
        value = functools.reduce(getattr, attr.split("."), module)
    except Exception as err:  # noqa: BLE001 - reported as a failing test
        return [BadEntry(line, f"quantbench_kernels line {line!r}: {type(err).__name__}: {err}")]
    return _as_kernels(value, f"quantbench_kernels line {line!r}")


def from_hook_results(results: Iterable[Any]) -> list[Kernel | BadEntry]:
    """Flatten what the ``pytest_quantbench_kernels`` hook implementations returned."""
    out: list[Kernel | BadEntry] = []
    for result in results:
        if result is not None:
            out.extend(_as_kernels(result, "pytest_quantbench_kernels hook"))
    return out


_KERNELS = pytest.StashKey[list]()


def registered_kernels(config: pytest.Config) -> list[Kernel | BadEntry]:
    """The built-in kernels, then the ``quantbench_kernels`` ini lines', then the hook's (cached)."""
    if _KERNELS not in config.stash:
        entries: list[Kernel | BadEntry] = list(builtin_kernels())
        for line in config.getini("quantbench_kernels"):
            entries.extend(from_ini_line(line))
        try:
            results = config.hook.pytest_quantbench_kernels()
        except Exception as err:  # noqa: BLE001 - reported as a failing test
            results = []
            entries.append(BadEntry("hook-error", f"pytest_quantbench_kernels raised {type(err).__name__}: {err}"))
        entries.extend(from_hook_results(results))
        config.stash[_KERNELS] = entries
    return config.stash[_KERNELS]
