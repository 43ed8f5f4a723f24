"""The conformance model: what a kernel's output must be, and how far it was.

- dequantize and quantize: bit-identical (byte-identical) to the reference, unless a dequantize
  kernel declares a lower precision or a tolerance (:class:`Criterion`).
- vec_dot and gemv: the integer parts of llama.cpp's dot products are exact in every correct
  kernel; only the float reduction (its order, fused multiply-adds) may differ. Each row is checked
  against the exact value of its terms (``quantbench_kernels.dot_terms``, in float64) within a
  rigorous rounding bound (:func:`dot_bound`). A kernel that asks for ``exact=True`` must equal
  the reference's float order bit for bit.

- A dot kernel that declares ``activation="float32"`` multiplies float32 x by the dequantized
  weights (the PyTorch / GPU path): each row is checked against the exact dot of the reference's
  dequantized weights with x, within :func:`float_dot_bound`.

Every kernel gets read-only copies of its inputs (writable copies, checked unchanged afterwards, if
it declares ``writable_inputs``), is called twice on each input and must give the same bits twice
(unless it declares ``deterministic=False``), and runs with NumPy's floating-point warnings off: the
edge-case blocks make inf and NaN on purpose, and a NumPy kernel is right to produce them quietly.

Each check runs the kernel and the NumPy reference on the same input and returns the
:class:`Distance` it measured (largest distance in ulps of the kernel's precision from the
reference's output, the largest share of the allowed error used), or raises :class:`ConformanceError` naming the kernel,
the format, the first failing block and weight (or byte, or row), the block's bytes in hex, the
expected and actual values with their bit patterns, the distance, and how many values fail.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

import quantbench_kernels as qk
from quantbench_kernels import BlockFormat
from quantbench_kernels.registry import c_name

from .bitexact import first_difference
from .bounds import (
    ADDS_PER_BLOCK,
    DEQUANTIZE_ROUNDINGS,
    FINAL_ADDS,
    FLOAT32_MAX,
    LARGEST,
    UNIT_ROUNDOFF,
    dot_bound,
    float_dot_bound,
)


class ConformanceError(AssertionError):
    """A kernel's output is outside its criterion (or the kernel failed to produce one)."""


@dataclass(frozen=True)
class Criterion:
    """What a kernel's output must satisfy: ``exact`` (bit-identical), else within the rounding of
    ``precision`` (the dot products' bound, or the decoded weights' rounding) plus
    ``atol + rtol * |expected|``."""

    exact: bool
    precision: str = "float32"
    rtol: float = 0.0
    atol: float = 0.0
    activation: str | None = None  # a dot kernel's declared activation ("float32"), else llama.cpp's

    def describe(self) -> str:
        if self.exact:
            return "bit-identical"
        parts = [] if self.precision == "float32" else [f"{self.precision} precision"]
        if self.rtol or self.atol:
            parts.append(f"rtol={self.rtol:g}, atol={self.atol:g}")
        text = "within " + (", ".join(parts) if parts else "the rounding bound")
        return text + (f" of a {self.activation}-activation dot" if self.activation else "")


class Checked(Protocol):
    """What a check reads of the kernel it runs (``pytest_quantbench.registration.Kernel`` is one)."""

    name: str
    op: str
    fn: Callable[..., Any]
    adds_per_block: int | None
    final_adds: int | None
    activation: str | None
    writable_inputs: bool
    deterministic: bool
    reference: str | None

    @property
    def arg_names(self) -> tuple[str, ...]: ...

    @property
    def criterion(self) -> Criterion: ...


@dataclass(frozen=True)
class Distance:
    """How far a kernel's output was on one input: the criterion it was held to, the largest
    distance in float32 ulps from the reference's output (for quantize: 0), and the largest share
    of the allowed error it used (None when bit-identity was required)."""

    criterion: str
    max_ulps: int = 0
    bound_share: float | None = None
    values: int = 0  # how many values (weights, bytes, rows) were compared
    non_finite: int = 0  # values non-finite on both sides (a NaN or infinite scale), not in max_ulps


def _hex(raw: np.ndarray, limit: int = 400) -> str:
    text = np.ascontiguousarray(raw).tobytes().hex(" ")
    return text if len(text) <= limit * 3 else text[: limit * 3] + " ..."


def _what(kernel: Checked, fmt: BlockFormat) -> str:
    return f"kernel {kernel.name!r} ({fmt.name} {kernel.op})"


READ_ONLY_HINT = ("the plugin hands a kernel read-only copies of its inputs, so that one that changes its caller's "
                  "arrays is caught; a kernel that must write to its inputs declares writable_inputs=True (it then "
                  "gets writable copies, checked unchanged after the call)")


def _call(kernel: Checked, fmt: BlockFormat, *args: Any) -> Any:
    """``kernel.fn(*args)`` with NumPy's floating-point warnings off; what it raises becomes a
    ConformanceError naming the kernel."""
    try:
        with np.errstate(all="ignore"):
            return kernel.fn(*args)
    except Exception as err:
        text = str(err).splitlines()[0] if str(err) else ""
        hint = f"\n  ({READ_ONLY_HINT})" if ("read-only" in text or "readonly" in text) else ""
        raise ConformanceError(f"{_what(kernel, fmt)} raised {type(err).__name__}: {text}{hint}") from err


def _handed(kernel: Checked, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Copies of ``args`` as the kernel gets them: read-only unless it declares writable_inputs."""
    out = []
    for a in args:
        c = np.array(a, copy=True)
        c.setflags(write=bool(kernel.writable_inputs))
        out.append(c)
    return tuple(out)


def _untouched(kernel: Checked, fmt: BlockFormat, names: tuple[str, ...], args: tuple[Any, ...],
               handed: tuple[Any, ...]) -> None:
    """Refuse a kernel that changed the inputs it was handed: writable ones, or read-only ones
    written through a pointer (the flag stops NumPy, not C code given the address)."""
    for name, before, after in zip(names, args, handed, strict=True):
        m = first_difference(np.asarray(before), after)
        if m is not None:
            index = m.index[0] if len(m.index) == 1 else m.index
            raise ConformanceError(
                f"{_what(kernel, fmt)} changed its input {name} in place: {m.n_different} of {m.n_total} values "
                f"differ, first at index {index} (was {np.asarray(before)[m.index]!r}, now {after[m.index]!r}); "
                "a kernel must leave its caller's arrays as it found them")


def _run(kernel: Checked, fmt: BlockFormat, args: tuple[Any, ...], result: Callable[[Any], np.ndarray],
         unit: str) -> np.ndarray:
    """The kernel's output on ``args`` (``result`` turns what it returns into an array), from two
    calls on fresh copies that must agree bit for bit unless it declares deterministic=False."""
    outputs = []
    for _ in range(2 if kernel.deterministic else 1):
        handed = _handed(kernel, args)
        outputs.append(np.array(result(_call(kernel, fmt, *handed)), copy=True))  # a reused buffer: copied
        _untouched(kernel, fmt, kernel.arg_names, args, handed)
    if len(outputs) == 2:
        m = first_difference(outputs[0], outputs[1])
        if m is not None:
            first, second = outputs[0][m.index], outputs[1][m.index]
            shown = (f"{_value(first)} then {_value(second)}" if outputs[0].dtype == np.float32
                     else f"0x{int(first):02x} then 0x{int(second):02x}")
            at = ", ".join(str(i) for i in m.index)
            raise ConformanceError(
                f"{_what(kernel, fmt)} gave different results on two calls with the same input: {m.n_different} "
                f"of {m.n_total} {unit} differ, first at [{at}]: {shown} (a kernel that cannot repeat its "
                "results declares deterministic=False)")
    return outputs[0]


def _host_candidates(value: Any) -> list[Any]:
    """``value``, then what its own methods make of it on the host: a torch tensor detached and
    moved to the CPU, a CuPy array copied to the host."""
    out = [value]
    for method in ("detach", "cpu", "get"):  # torch: detach().cpu(); CuPy: get()
        fn = getattr(out[-1], method, None)
        if callable(fn):
            try:
                out.append(fn())
            except Exception:  # noqa: BLE001 - try the next way to the host
                continue
    return out


def to_host(value: Any) -> np.ndarray | None:
    """A NumPy array of ``value``: itself, or through DLPack or ``__array__`` (torch on CPU or
    CUDA, CuPy, JAX, any array API library), on the host. None if NumPy cannot take it."""
    if isinstance(value, np.ndarray):
        return value
    for candidate in _host_candidates(value):
        if isinstance(candidate, np.ndarray):
            return candidate
        if hasattr(candidate, "__dlpack__"):
            try:
                return np.from_dlpack(candidate)
            except Exception:  # noqa: BLE001 - a device array, a dtype NumPy lacks: try __array__
                pass
        if hasattr(candidate, "__array__"):
            try:
                return np.asarray(candidate)
            except Exception:  # noqa: BLE001 - try the next candidate
                pass
    return None


def _as_array(kernel: Checked, fmt: BlockFormat, value: Any, dtype: type, shape: tuple[int, ...]) -> np.ndarray:
    """The kernel's output as a NumPy array of ``shape``: ``dtype``, or for a kernel that declares a
    lower precision any floating dtype, widened to float32."""
    what = f"kernel {kernel.name!r} ({fmt.name} {kernel.op})"
    array = to_host(value)
    if array is None:
        raise ConformanceError(f"{what} returned {type(value).__name__}, which NumPy cannot take (no DLPack, no "
                               "__array__): return an array on the host or one that exports DLPack")
    lower = dtype is np.float32 and kernel.criterion.precision != "float32"
    if lower and array.dtype.kind == "f":
        array = array.astype(np.float32)
    if array.dtype != dtype:
        raise ConformanceError(f"{what} returned dtype {array.dtype}, expected {np.dtype(dtype)}")
    if array.size != int(np.prod(shape)):
        raise ConformanceError(f"{what} returned shape {array.shape}, expected {shape}")
    return np.ascontiguousarray(array).reshape(shape)


def _ordered(a: np.ndarray, precision: str) -> np.ndarray:
    """Values of ``a`` rounded to ``precision`` as int64 that count its representable values in order."""
    if precision == "float16":
        with np.errstate(over="ignore"):
            bits = a.astype(np.float16).view(np.int16).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFF), bits)
    bits = a.astype(np.float32).view(np.uint32).astype(np.int64)
    if precision == "bfloat16":  # round to nearest even on the 16 bits bfloat16 keeps
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        return np.where(bits & 0x8000, -(bits & 0x7FFF), bits)
    return np.where(bits & 0x80000000, -(bits & 0x7FFFFFFF), bits)


def ulps(expected: np.ndarray, actual: np.ndarray, precision: str = "float32") -> np.ndarray:
    """Distance in units in the last place of ``precision`` (int64): how many values of that
    precision lie between the two, each rounded to it. -1 where either is not finite: a distance
    means nothing there (:class:`Distance` counts the values non-finite on both sides apart)."""
    both = np.isfinite(expected) & np.isfinite(actual)
    with np.errstate(invalid="ignore"):
        e = np.where(both, expected, 0).astype(np.float32)
        a = np.where(both, actual, 0).astype(np.float32)
    return np.where(both, np.abs(_ordered(e, precision) - _ordered(a, precision)), -1)


def _distance_text(expected: float, actual: float, distance: int, precision: str) -> str:
    if distance >= 0:
        return f"{distance} {precision} ulps"
    if not math.isfinite(expected) and not math.isfinite(actual):
        return "both non-finite"
    return "non-finite where the reference is finite" if math.isfinite(expected) else \
        "finite where the reference is not"


def _header(kernel: Checked, fmt: BlockFormat, how: str | None = None) -> str:
    how = how or kernel.criterion.describe()
    return f"kernel {kernel.name!r} ({fmt.name} {kernel.op}) is not {how}" + (
        " to the reference" if how == "bit-identical" else " of the reference")


def _field_at(fmt: BlockFormat, offset: int) -> str:
    for name, (dtype, start) in fmt.block_dtype.fields.items():
        if start <= offset < start + dtype.itemsize:
            base = dtype.subdtype[0] if dtype.subdtype else dtype
            index = (offset - start) // base.itemsize
            return f"{name}[{index}]" if dtype.subdtype else name
    return "?"


def _value(v: float) -> str:
    """A float32 value and its bit pattern: ``0.5 (0x3f000000)``."""
    return f"{float(v)!r} (0x{np.float32(v).view(np.uint32):08x})"


def _exact(kernel: Checked, fmt: BlockFormat, expected: np.ndarray, actual: np.ndarray,
           where: Callable[[tuple[int, ...]], str], unit: str, reference: str = "") -> Distance:
    """Bit-identity, with a message naming the first difference (``where(index)``) and the
    ``reference`` function the expected values reproduce (where an op has several)."""
    m = first_difference(expected, actual)
    if m is not None:
        distance = int(ulps(expected, actual).max()) if expected.dtype == np.float32 else 0
        header = _header(kernel, fmt, 'bit-identical') + (f" ({reference})" if reference else "")
        raise ConformanceError(
            f"{header}: {m.n_different} of {m.n_total} {unit} differ"
            + (f" (up to {distance} ulps among the finite ones)" if distance > 0 else "") + "\n"
            f"  first at {where(m.index)}"
        )
    both = int((~np.isfinite(expected) & ~np.isfinite(actual)).sum()) if expected.dtype == np.float32 else 0
    return Distance("bit-identical", values=int(expected.size), non_finite=both)


def _within(kernel: Checked, fmt: BlockFormat, reference: np.ndarray, actual: np.ndarray, target: np.ndarray,
            allowed: np.ndarray, overflow_ok: np.ndarray, where: Callable[[tuple[int, ...]], str],
            unit: str, blocks_at: Callable[[tuple[int, ...]], np.ndarray]) -> Distance:
    """``actual`` within ``allowed`` of ``target`` (the exact value, float64) where that is finite,
    or non-finite where float32 may overflow on the way (``overflow_ok``: another order of the same
    sums may overflow where the reference's did not, or not where it did); non-finite where the
    exact value is (a NaN or infinite scale). ``blocks_at(index)``: the blocks the value at
    ``index`` was made from (to say where a lower precision overflows)."""
    ok, share = _judge(actual, target, allowed, overflow_ok)
    precision = kernel.criterion.precision
    distances = ulps(reference, actual, precision)
    shares = np.where(np.isfinite(target) & np.isfinite(actual), share, 0.0)
    if not ok.all():
        bad = np.argwhere(~ok)
        index = tuple(int(i) for i in bad[0])
        distance = _distance_text(float(reference[index]), float(actual[index]), int(distances[index]), precision)
        measured = (f"{distance} from the reference's float32, {share[index]:.3g} times the allowed error "
                    f"{allowed[index]:.3g}" if distances[index] >= 0 else f"none, {distance}")
        raise ConformanceError(
            f"{_header(kernel, fmt)}: {len(bad)} of {ok.size} {unit} outside it\n"
            f"  first at {where(index)}\n"
            f"  distance: {measured} (exact value {float(target[index])!r})"
            + _overflow_note(kernel, fmt, float(target[index]), float(actual[index]), blocks_at(index))
        )
    both = int((~np.isfinite(reference) & ~np.isfinite(actual)).sum())
    return Distance(kernel.criterion.describe(), int(distances.max(initial=0)), float(shares.max(initial=0.0)),
                    int(reference.size), both)


def _overflow_note(kernel: Checked, fmt: BlockFormat, target: float, actual: float, blocks: np.ndarray) -> str:
    """For a kernel computing in float16 (or bfloat16) whose value is not finite where the exact one
    is: the sentence that says its precision overflows on the way, from the blocks' largest scale."""
    precision = kernel.criterion.precision
    if precision == "float32" or not math.isfinite(target) or math.isfinite(actual):
        return ""
    largest = LARGEST[precision]
    structured = np.ascontiguousarray(blocks).reshape(-1, fmt.block_bytes).view(fmt.block_dtype)
    scales = [np.abs(structured[name].astype(np.float64)).max() for name in fmt.block_dtype.names
              if (fmt.block_dtype.fields[name][0].subdtype or (fmt.block_dtype.fields[name][0],))[0].kind == "f"]
    scale = max(scales, default=0.0)
    return (f"\n  {precision} overflows on the way: its largest finite value is {largest:g}, and this block's largest "
            f"scale is {scale:g}, so a scale times a quant or a sub-scale passes it before the weight is formed "
            f"(the float32 reference stays finite). A kernel that does not handle such blocks declares "
            f"extreme_scales=False (Hypothesis then draws no scale beyond 1.0, inf or NaN)")


def _judge(actual: np.ndarray, target: np.ndarray, allowed: np.ndarray, overflow_ok: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Which values pass (see :func:`_within`), and the share of the allowed error each used."""
    with np.errstate(all="ignore"):
        error = np.abs(actual.astype(np.float64) - target)
        share = np.where(allowed > 0, error / allowed, np.where(error == 0, 0.0, np.inf))
    finite = np.isfinite(target)
    return np.where(finite, (share <= 1) | (overflow_ok & ~np.isfinite(actual)), ~np.isfinite(actual)), share


def check_dequantize(kernel: Checked, fmt: BlockFormat, raw: np.ndarray, *, verbose: bool = False) -> Distance:
    """``raw``: uint8 (n_blocks, block_bytes)."""
    expected = qk.dequantize(raw, fmt, backend="reference")
    actual = _run(kernel, fmt, (raw,),
                  lambda value: _as_array(kernel, fmt, value, np.float32, expected.shape), "weights")

    def where(index: tuple[int, ...]) -> str:
        block, weight = index
        return (f"block {block}, weight {weight}: expected {_value(expected[index])}, "
                f"got {_value(actual[index])}\n  block {block} bytes: {_hex(raw[block])}")

    c = kernel.criterion
    if c.exact:
        return _exact(kernel, fmt, expected, actual, where, "weights")
    e64 = expected.astype(np.float64)
    with np.errstate(all="ignore"):
        block_max = np.nanmax(np.where(np.isfinite(e64), np.abs(e64), 0.0), axis=1, keepdims=True)
        allowed = DEQUANTIZE_ROUNDINGS * UNIT_ROUNDOFF[c.precision] * block_max + c.atol + c.rtol * np.abs(e64)
    limit = float(np.finfo(c.precision).max) if c.precision != "bfloat16" else FLOAT32_MAX
    return _within(kernel, fmt, expected, actual, e64, allowed, np.abs(e64) + allowed > limit, where, "weights",
                   lambda index: raw[index[0]])


def _inputs_shown(verbose: bool, *named: tuple[str, np.ndarray]) -> str:
    """The float inputs of a failing block, bits and decimals, under -vv; else where to find them."""
    if not verbose:
        return "\n  (-vv shows the block's float inputs)"
    return "".join(f"\n  {name} (float32 bits): {' '.join(f'{b:08x}' for b in v.view(np.uint32))}\n  {name}: {v!r}"
                   for name, v in named)


def quantizer_name(kernel: Checked, fmt: BlockFormat) -> str:
    """The llama.cpp quantizer a quantize kernel is checked against."""
    return kernel.reference or fmt.quantizer


def check_quantize(kernel: Checked, fmt: BlockFormat, x: np.ndarray, *, verbose: bool = False) -> Distance:
    """``x``: float32 (n_weights,). Checked against the format's reference quantizer, or the other
    llama.cpp quantizer the kernel names (``reference``), on the bytes that quantizer defines."""
    name = quantizer_name(kernel, fmt)
    if name in fmt.quantizers:
        with np.errstate(all="ignore"):  # as the api runs every reference: huge inputs overflow quietly
            expected, defined = fmt.quantizers[name](x.reshape(-1, fmt.block_weights))
    else:
        expected = qk.quantize(x, fmt, backend="reference")
        defined = np.ones(expected.shape, dtype=bool)
    actual = _run(kernel, fmt, (x,), lambda value: _as_array(kernel, fmt, value, np.uint8, expected.shape),
                  "bytes")
    undefined = f" (bytes {name} leaves undefined are not compared)" if not defined.all() else ""

    def where(index: tuple[int, ...]) -> str:
        block, offset = index
        text = (f"block {block}, byte {offset} ({_field_at(fmt, offset)}): "
                f"expected 0x{expected[index]:02x}, got 0x{actual[index]:02x}\n"
                f"  expected block {block}: {_hex(expected[block])}\n"
                f"  actual block {block}:   {_hex(actual[block])}{undefined}")
        return text + _inputs_shown(verbose, ("input weights", x[block * fmt.block_weights:
                                                                 (block + 1) * fmt.block_weights]))

    return _exact(kernel, fmt, expected, np.where(defined, actual, expected), where, "bytes", name)


def check_quantize_imatrix(kernel: Checked, fmt: BlockFormat, x: np.ndarray, imatrix: np.ndarray, *,
                           verbose: bool = False) -> Distance:
    """``x``: float32 (rows, n_per_row); ``imatrix``: float32 (n_per_row,), its importance."""
    expected = qk.quantize(x, fmt, imatrix=imatrix, backend="reference").reshape(-1, fmt.block_bytes)
    actual = _run(kernel, fmt, (x, imatrix),
                  lambda value: _as_array(kernel, fmt, value, np.uint8, expected.shape), "bytes")
    per_row = x.shape[1] // fmt.block_weights

    def where(index: tuple[int, ...]) -> str:
        block, offset = index
        row, col = divmod(block, per_row)
        at = col * fmt.block_weights
        text = (f"row {row}, block {col}, byte {offset} ({_field_at(fmt, offset)}): "
                f"expected 0x{expected[index]:02x}, got 0x{actual[index]:02x}\n"
                f"  expected block: {_hex(expected[block])}\n"
                f"  actual block:   {_hex(actual[block])}")
        return text + _inputs_shown(verbose, ("input weights", x[row, at:at + fmt.block_weights]),
                                    ("their importance", imatrix[at:at + fmt.block_weights]))

    return _exact(kernel, fmt, expected, actual, where, "bytes",
                  f"quantize_{c_name(fmt.name)} with an importance matrix")


def _float_weights(fmt: BlockFormat, w: np.ndarray) -> np.ndarray:
    """The reference's dequantized weights of rows ``w`` (uint8 (rows, row_bytes)): float32 (rows, n)."""
    return qk.dequantize(w.reshape(-1, fmt.block_bytes), fmt, backend="reference").reshape(w.shape[0], -1)


def _expected(kernel: Checked, fmt: BlockFormat, w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, tuple | None]:
    """What the kernel's rows are measured against in ulps, float32 (rows,): the reference's gemv;
    or for a float-activation kernel the exact dot of the dequantized weights rounded to float32,
    returned with the :func:`_allowed` it is part of (computed once: the exact sums and the bound
    come from the same dequantized weights)."""
    if kernel.activation == "float32":
        model = _allowed(kernel, fmt, w, x)
        with np.errstate(all="ignore"):
            return model[0].astype(np.float32), model
    return qk.gemv(w, x, fmt, backend="reference"), None


def _allowed(kernel: Checked, fmt: BlockFormat, w: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """The exact values of rows ``w`` (uint8 (rows, row_bytes)) times ``x``, the error allowed to
    the kernel (its criterion's bound and tolerance), and where its precision may overflow on the
    way (a scale product or a partial sum beyond its range), each (rows,)."""
    c = kernel.criterion
    limit = LARGEST[c.precision]
    if kernel.activation == "float32":
        weights = _float_weights(fmt, w)
        exact, bound, magnitude = float_dot_bound(weights, x, fmt.block_weights, c.precision, kernel.adds_per_block,
                                                  kernel.final_adds or FINAL_ADDS)
        with np.errstate(all="ignore"):
            allowed = bound + c.atol + c.rtol * np.abs(exact)
            big = max(float(np.abs(x).max(initial=0.0)), 0.0)
            overflow = ((magnitude + allowed > limit) | (np.nanmax(np.abs(weights), axis=1, initial=0.0) > limit)
                        | (big > limit))
        return exact, allowed, overflow
    terms = qk.dot_terms(w, x, fmt)
    n_blocks = w.shape[1] // fmt.block_bytes
    adds_per_block = kernel.adds_per_block or max(ADDS_PER_BLOCK, terms.coef.shape[1] // n_blocks)
    exact, bound, magnitude = dot_bound(terms, n_blocks, UNIT_ROUNDOFF[c.precision], adds_per_block,
                                        kernel.final_adds or FINAL_ADDS)
    with np.errstate(all="ignore"):
        allowed = bound + c.atol + c.rtol * np.abs(exact)
        overflow = (magnitude + allowed > limit) | (np.abs(terms.coef) > limit).any(axis=1)
    return exact, allowed, overflow


def _check_rows(kernel: Checked, fmt: BlockFormat, w: np.ndarray, x: np.ndarray,
                reference: tuple[np.ndarray, tuple | None], actual: np.ndarray,
                rerun: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Distance:
    """Rows of dot products: bit-identical for an ``exact`` kernel, else within :func:`dot_bound`
    (or :func:`float_dot_bound`) of the exact value. ``w``: uint8 (rows, row_bytes); ``reference``:
    :func:`_expected`'s; ``rerun(w_rows, x)`` calls the kernel again (on one block, to say which
    block fails)."""
    expected, model = reference
    blocks = w.reshape(w.shape[0], -1, fmt.block_bytes)

    def where(index: tuple[int, ...]) -> str:
        row = index[0]
        text = f"row {row}: expected {_value(expected[row])}, got {_value(actual[row])}"
        return text + _float_hint(kernel, fmt, w[row:row + 1], x, actual[row:row + 1]) + "\n  " + \
            _failing_block(kernel, fmt, blocks[row], x, rerun, row)

    if kernel.criterion.exact:
        return _exact(kernel, fmt, expected, actual, where, "rows")
    exact, allowed, overflow = model or _allowed(kernel, fmt, w, x)
    return _within(kernel, fmt, expected, actual, exact, allowed, overflow, where, "rows",
                   lambda index: blocks[index[0]])


def _float_hint(kernel: Checked, fmt: BlockFormat, w: np.ndarray, x: np.ndarray, actual: np.ndarray) -> str:
    """For a dot kernel judged on llama.cpp's quantized activation: whether its failing row would
    pass as a float32-activation dot, the usual reason (the PyTorch / GPU path)."""
    if kernel.activation is not None or kernel.criterion.exact:
        return ""
    exact, bound, _ = float_dot_bound(_float_weights(fmt, w), x, fmt.block_weights)
    with np.errstate(all="ignore"):
        close = bool(np.isfinite(exact[0]) and abs(float(actual[0]) - exact[0]) <= bound[0])
    return ("\n  (this row is within the bound of a float32-activation dot, x times the dequantized weights: if the "
            "kernel does not quantize x as llama.cpp does, declare activation=\"float32\")") if close else ""


def _failing_block(kernel: Checked, fmt: BlockFormat, row_blocks: np.ndarray, x: np.ndarray,
                   rerun: Callable[[np.ndarray, np.ndarray], np.ndarray], row: int) -> str:
    """Which block of a failing row fails on its own: the kernel run again on each block alone."""
    width = fmt.block_weights
    precision = kernel.criterion.precision
    for b in range(row_blocks.shape[0]):
        w1, x1 = row_blocks[b:b + 1].reshape(1, -1), x[b * width:(b + 1) * width]
        expected, model = _expected(kernel, fmt, w1, x1)
        try:
            with np.errstate(all="ignore"):
                actual = _as_array(kernel, fmt, rerun(*_handed(kernel, (w1, x1))), np.float32, (1,))
        except Exception as err:  # noqa: BLE001 - the kernel may not take one-block rows: say less
            return (f"(run on block {b} of row {row} alone, the kernel raised {type(err).__name__}, so no block is "
                    f"named); row {row}, block 0 bytes: {_hex(row_blocks[0])}")
        distance = _distance_text(float(expected[0]), float(actual[0]), int(ulps(expected, actual, precision)[0]),
                                  precision)
        if kernel.criterion.exact:
            bad = first_difference(expected, actual) is not None
            detail = distance
        else:
            exact, allowed, overflow = model or _allowed(kernel, fmt, w1, x1)
            ok, share = _judge(actual, exact, allowed, overflow)
            bad = not ok[0]
            detail = f"{distance}, {share[0]:.3g} times its bound {allowed[0]:.3g}"
        if bad:
            return (f"block {b} of row {row} fails alone ({detail}): expected {_value(expected[0])}, "
                    f"got {_value(actual[0])}\n  row {row}, block {b} bytes: {_hex(row_blocks[b])}")
    return f"no block of row {row} fails alone; row {row}, block 0 bytes: {_hex(row_blocks[0])}"


def check_gemv(kernel: Checked, fmt: BlockFormat, w: np.ndarray, x: np.ndarray, *, verbose: bool = False) -> Distance:
    """``w``: uint8 (rows, row_bytes); ``x``: float32 (row_weights,)."""
    expected = _expected(kernel, fmt, w, x)
    actual = _run(kernel, fmt, (w, x),
                  lambda value: _as_array(kernel, fmt, value, np.float32, expected[0].shape), "rows")
    return _check_rows(kernel, fmt, w, x, expected, actual, kernel.fn)


def check_vec_dot(kernel: Checked, fmt: BlockFormat, w: np.ndarray, x: np.ndarray, *,
                  verbose: bool = False) -> Distance:
    """``w``: uint8 (n_blocks, block_bytes), one row; ``x``: float32 (n_blocks * block_weights,)."""
    expected = _expected(kernel, fmt, w.reshape(1, -1), x)
    actual = _run(kernel, fmt, (w, x), lambda value: np.float32([_scalar(kernel, fmt, value)]), "rows")
    return _check_rows(kernel, fmt, w.reshape(1, -1), x, expected, actual,
                       lambda w1, x1: np.float32([_scalar(kernel, fmt, kernel.fn(w1.reshape(-1, fmt.block_bytes),
                                                                                   x1))]))


def _scalar(kernel: Checked, fmt: BlockFormat, value: Any) -> float:
    """A vec_dot kernel's result: a float, or a one-value float array of any library."""
    array = np.float64(value) if isinstance(value, (float, np.floating)) else to_host(value)
    if array is None or np.size(array) != 1 or np.asarray(array).dtype.kind != "f":
        raise ConformanceError(f"kernel {kernel.name!r} ({fmt.name} vec_dot) returned {type(value).__name__}, "
                               "expected a float")
    return float(np.asarray(array).item())
