"""Kernels under test: the package's own Numba kernels and those a downstream project registers.

A kernel is one function for one op and one format. Its signature is that of the
``quantbench_kernels`` function of the op, without ``qtype`` and ``backend``:

    dequantize(raw: uint8 (n_blocks, block_bytes))      -> float32 (n_blocks, block_weights)
    quantize(x: float32 (n_weights,))                    -> uint8 (n_blocks, block_bytes)
    vec_dot(w_raw: uint8 (n_blocks, block_bytes), x)    -> float
    gemv(w_raw: uint8 (rows, row_bytes), x: float32)     -> float32 (rows,)
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numba
import pytest

import quantbench_kernels as qk

from . import options
from .conformance import UNIT_ROUNDOFF, Criterion
from .ops import OPS
from .table import PROBE, REFERENCE

# What a dot kernel may declare it multiplies the weights by, besides llama.cpp's quantized activation.
ACTIVATIONS = ("float32",)

BUILTIN = options.BUILTIN_NAME
# Names of the rows the plugin measures itself: a kernel named like one would be taken for it.
RESERVED_NAMES = (BUILTIN, REFERENCE, PROBE)


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
    # The conformance criterion (pytest_quantbench.conformance): dequantize and quantize are
    # bit-identical; dot products are within a rigorous rounding bound of the exact value, or
    # bit-identical to llama.cpp's generic float order with exact=True. A kernel may declare less:
    # the precision it computes in ("float16", "bfloat16"), or a tolerance atol + rtol * |expected|.
    exact: bool = False
    precision: str = "float32"
    rtol: float = 0.0
    atol: float = 0.0
    # A dot kernel that adds more than bounds.ADDS_PER_BLOCK float terms per block into one
    # accumulator, or reduces more than bounds.FINAL_ADDS accumulators, says so (dot_bound).
    adds_per_block: int | None = None
    final_adds: int | None = None
    threads: int | None = None  # how many threads fn uses (None: unknown), shown in the summary
    # What a dot kernel multiplies the weights by: None, x quantized to the format's activation type
    # as llama.cpp's CPU backend does (Q8_K, Q8_0, Q8_1); "float32", x itself times the dequantized
    # weights (the PyTorch / GPU path), judged against the exact dot of the reference's dequantized
    # weights with x (conformance.float_dot_bound), in ``precision``.
    activation: str | None = None
    # How the kernel's inputs are handed to it: read-only copies, unless it must write to them
    # (then writable copies, checked unchanged after each call).
    writable_inputs: bool = False
    # Each input is run twice and must give the same bits twice, unless the kernel says it cannot.
    deterministic: bool = True
    # Whether Hypothesis may draw blocks with extreme f16 scales (inf, NaN, 65504): a kernel that
    # computes in float16 and does not handle them may leave them out (False).
    extreme_scales: bool = True
    # The llama.cpp quantizer a quantize kernel follows, where a format has more than one
    # (quantbench_kernels.BlockFormat.quantizers); None: the format's default reference.
    reference: str | None = None
    origin: str = field(default="", compare=False, repr=False)  # where it was registered (set by the plugin)

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
        if not isinstance(self.name, str) or not self.name.strip() or "|" in self.name:
            return f"kernel {self.name!r}: a kernel's name must be a non-empty string without '|'"
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
        return self._criterion_problem() or self._declaration_problem(fmt) or self._signature_problem()

    @property
    def _what(self) -> str:
        """How problems name the kernel: ``kernel 'mine' (Q4_K gemv)``."""
        return f"kernel {self.name!r} ({self.format_name} {self.op})"

    def _criterion_problem(self) -> str | None:
        what = self._what
        if self.precision not in UNIT_ROUNDOFF:
            return f"{what}: precision {self.precision!r} is not one of {', '.join(UNIT_ROUNDOFF)}"
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                return f"{what}: {name} must be a finite number >= 0, got {value!r}"
        lowered = self._lowered
        if self.exact and lowered:
            return f"{what}: exact=True asks for bit-identity; it cannot come with a precision or a tolerance"
        if self.op in OPS and OPS[self.op].bytes_out and lowered:
            return f"{what}: {self.op} is checked byte for byte; a precision or a tolerance means nothing for bytes"
        for name in ("adds_per_block", "final_adds", "threads"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                return f"{what}: {name} must be a positive integer or None, got {value!r}"
        return None

    def _declaration_problem(self, fmt: qk.BlockFormat) -> str | None:
        what = self._what
        op = OPS[self.op]
        if self.activation is not None:
            if not op.dot:
                return f"{what}: activation= is for the dot products (vec_dot, gemv), not {self.op}"
            if self.activation not in ACTIVATIONS:
                return (f"{what}: activation {self.activation!r} is not one of {', '.join(map(repr, ACTIVATIONS))} "
                        f"(leave it None for x quantized to {fmt.activation} as llama.cpp does)")
            if self.exact:
                return (f"{what}: exact=True asks for the reference's float order, and no reference computes a "
                        f"float32-activation dot: leave exact off (judged within the rounding bound)")
        if self.reference is not None:
            names = fmt.quantizer_names
            if not op.bytes_out:
                return f"{what}: reference= names a quantizer; {self.op} has one reference"
            if self.reference not in names:
                return f"{what}: reference {self.reference!r} is not one of {fmt.name}'s quantizers: {', '.join(names)}"
        for name in ("writable_inputs", "deterministic", "extreme_scales"):
            if not isinstance(getattr(self, name), bool):
                return f"{what}: {name} must be True or False, got {getattr(self, name)!r}"
        return None

    @property
    def arg_names(self) -> tuple[str, ...]:
        """The arguments the kernel's op passes it, by name (``ops.Op.args``)."""
        return OPS[self.op].args

    def _signature_problem(self) -> str | None:
        """A Python ``fn`` that cannot take its op's arguments, found before any call (one line,
        and none of its tests, benchmarks included, calls it). A callable whose signature Python
        cannot read (a C function, a Numba dispatcher) is left to its first call."""
        try:
            signature = inspect.signature(self.fn)
        except (TypeError, ValueError):
            return None
        try:
            signature.bind(*self.arg_names)
        except TypeError as err:
            return (f"{self._what}: fn{signature} cannot be called as a {self.op} "
                    f"kernel, fn({', '.join(self.arg_names)}): {err}")
        return None

    def __repr__(self) -> str:
        # Short: Hypothesis prints it in every falsifying example (the fn and every field made 20 lines).
        return f"Kernel({self.name!r}, {self.format_name}, {self.op})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # Hypothesis' printer: the same short form
        p.text(repr(self))

    @property
    def _lowered(self) -> bool:
        """Whether the kernel declares less than float32 bit-identity: a precision or a tolerance."""
        return self.precision != "float32" or bool(self.rtol) or bool(self.atol)

    @property
    def threads_label(self) -> int | str | None:
        """The thread count the summary shows: the declared one; for the built-ins "auto<=N" (one
        thread below 1M weights of work, Numba's N above); None: not declared."""
        if self.name == BUILTIN and self.origin == builtin_origin():
            return f"auto<={numba.config.NUMBA_NUM_THREADS}"
        return self.threads

    @property
    def criterion(self) -> Criterion:
        """What the conformance tests hold this kernel's output to."""
        exact = self.exact or (self.op in OPS and OPS[self.op].exact_by_default and not self._lowered)
        return Criterion(exact, self.precision, float(self.rtol), float(self.atol), self.activation)


def builtin_kernels() -> list[Kernel]:
    """The package's own Numba kernels: every op that each registered format supports."""
    out = []
    for fmt in qk.formats():
        for op in OPS.values():
            if op.supported_by(fmt):
                out.append(Kernel(name=BUILTIN, qtype=fmt.name, op=op.name, fn=op.builtin(fmt), exact=True,
                                  origin=builtin_origin()))
    return out


@dataclass(frozen=True)
class BadEntry:
    """A registration that could not even produce a Kernel (a bad ini line, a hook that raised)."""

    id: str
    message: str


def _as_kernels(value: Any, source: str) -> list[Kernel | BadEntry]:
    if isinstance(value, Kernel):
        return [dataclasses.replace(value, origin=source)]
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


def from_hook(config: pytest.Config) -> list[Kernel | BadEntry]:
    """What each ``pytest_quantbench_kernels`` implementation returned, each kernel tagged with
    where it came from (the conftest or plugin that implements the hook)."""
    out: list[Kernel | BadEntry] = []
    for impl in config.hook.pytest_quantbench_kernels.get_hookimpls():
        source = f"the pytest_quantbench_kernels hook of {impl.plugin_name}"
        try:
            result = impl.function()
        except Exception as err:  # noqa: BLE001 - reported as a failing test
            out.append(BadEntry("hook-error", f"{source} raised {type(err).__name__}: {err}"))
            continue
        if result is not None:
            out.extend(_as_kernels(result, source))
    return out


def check_identities(entries: list[Kernel | BadEntry]) -> list[Kernel | BadEntry]:
    """Refuse kernels that would be mistaken for another: two registrations of one (name, format,
    op) would share a row of the table and a key of the gate (so one could slow down unseen), and
    a name the plugin uses for its own rows would be taken for them. Each such kernel becomes a
    failing entry naming the registrations."""
    by_id: dict[str, list[Kernel]] = {}
    for e in entries:
        if isinstance(e, Kernel):
            by_id.setdefault(e.id, []).append(e)
    out: list[Kernel | BadEntry] = []
    for e in entries:
        if not isinstance(e, Kernel):
            out.append(e)
        elif len(by_id[e.id]) > 1:
            where = "; ".join(k.origin or "unknown" for k in by_id[e.id])
            out.append(BadEntry(e.id, f"kernel {e.name!r} ({e.format_name} {e.op}) is registered "
                                      f"{len(by_id[e.id])} times ({where}): give each a name of its own"))
        elif e.name in RESERVED_NAMES and e.origin != builtin_origin():
            out.append(BadEntry(e.id, f"kernel {e.name!r} ({e.format_name} {e.op}, from {e.origin}): the name "
                                      f"{e.name!r} is one the plugin uses for its own rows "
                                      f"({', '.join(RESERVED_NAMES)}): choose another"))
        else:
            out.append(e)
    return out


def builtin_origin() -> str:
    return "pytest-quantbench's built-in kernels"


@dataclass(frozen=True)
class Registered:
    """This session's kernels: ``tested`` are conformance-tested and benchmarked; ``compared`` are
    benchmarked only, as comparison rows (the built-ins beside a project's own kernels)."""

    tested: list[Kernel | BadEntry]
    compared: list[Kernel]

    @property
    def benchmarked(self) -> list[Kernel | BadEntry]:
        return self.tested + list(self.compared)

    @property
    def own(self) -> list[Kernel]:
        """The usable kernels that the project registered (not the built-ins)."""
        return [k for k in self.tested if isinstance(k, Kernel) and k.origin != builtin_origin()
                and k.problem() is None]


_KERNELS = pytest.StashKey[Registered]()


def select_builtins(own: list[Kernel | BadEntry], mode: str) -> tuple[list[Kernel], list[Kernel]]:
    """The built-in kernels to (test, compare with), by ``--quantbench-builtins`` ``mode``: with no
    registered kernels all are tested; else "compare" benchmarks those of the registered kernels'
    formats and ops beside them, "test" tests and benchmarks all, "off" leaves them out."""
    builtins = builtin_kernels()
    if not own or mode == "test":
        return builtins, []
    if mode == "off":
        return [], []
    pairs = {(k.format_name, k.op) for k in own if isinstance(k, Kernel)}
    return [], [k for k in builtins if (k.format_name, k.op) in pairs]


def registered_kernels(config: pytest.Config, cache: bool = True) -> Registered:
    """The ``quantbench_kernels`` ini lines' kernels and the hook's, with the built-ins that
    ``--quantbench-builtins`` selects (cached from the first call with ``cache``: the report
    header asks before the conftests of test folders are loaded, so it does not cache)."""
    if _KERNELS in config.stash:
        return config.stash[_KERNELS]
    own: list[Kernel | BadEntry] = []
    for line in config.getini("quantbench_kernels"):
        own.extend(from_ini_line(line))
    own.extend(from_hook(config))
    tested, compared = select_builtins(own, options.builtins_mode(config))
    entries = check_identities(tested + own + compared)
    found = Registered([e for e in entries if not (isinstance(e, Kernel) and e in compared)],
                       [e for e in entries if isinstance(e, Kernel) and e in compared])
    if cache:
        config.stash[_KERNELS] = found
    return found


def ab_pairs(entries: list[Kernel | BadEntry], old: str, new: str) -> list[tuple[Kernel, Kernel] | BadEntry]:
    """The (old, new) kernel pairs of ``--quantbench-ab OLD,NEW``: one per format and op that both
    names implement, or one BadEntry saying why there is none."""
    usable = [k for k in entries if isinstance(k, Kernel) and k.problem() is None]
    olds = {(k.format_name, k.op): k for k in usable if k.name == old}
    news = {(k.format_name, k.op): k for k in usable if k.name == new}
    common = sorted(set(olds) & set(news))
    if common:
        return [(olds[c], news[c]) for c in common]
    known = ", ".join(sorted({k.name for k in usable})) or "none"
    missing = [n for n, found in ((old, olds), (new, news)) if not found]
    why = (f"no usable kernel is named {' or '.join(repr(n) for n in missing)}" if missing
           else f"{old!r} ({', '.join(f'{f} {o}' for f, o in sorted(olds))}) and {new!r} "
                f"({', '.join(f'{f} {o}' for f, o in sorted(news))}) share no format and op")
    return [BadEntry(f"{old}-vs-{new}", f"--quantbench-ab {old},{new}: {why} (registered kernels: {known})")]


def import_from(path: str | Path, name: str) -> ModuleType:
    """Import the module file or package folder at ``path`` as the module ``name``, beside any
    module of its own name: the kernels of another checkout (``git worktree add ../base main``)
    next to this one's, for ``--quantbench-ab``. Relative imports inside a package resolve to the
    same copy; absolute imports of its own name resolve to whatever that name imports here."""
    path = Path(path)
    if path.is_dir():
        spec = importlib.util.spec_from_file_location(name, path / "__init__.py",
                                                      submodule_search_locations=[str(path)])
    else:
        spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not (path / "__init__.py" if path.is_dir() else path).is_file():
        raise ImportError(f"import_from: {str(path)!r} is neither a Python file nor a package folder")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
