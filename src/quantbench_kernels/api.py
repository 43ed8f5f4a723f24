"""The public functions: validate, look the format and backend up in the registry, call the kernel."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType

from .compilation import resolve_threads
from .registry import BlockFormat, DotTerms, get_format
from .validation import as_bytes, as_float32, check_out, check_row_length, check_whole_blocks

QType = str | GGMLQuantizationType | BlockFormat


def _op(fmt: BlockFormat, backend: str, op: str) -> Callable[..., Any]:
    fn = getattr(fmt.backend(backend), op)
    if fn is None:
        raise ValueError(f"{fmt.name} has no {op} in the {backend} backend")
    return _reference(fn) if backend == "reference" else fn


def _reference(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A reference op ``fn(*inputs, threads)`` as the API calls it: ``threads`` checked as the Numba
    kernels check it (the reference runs on one thread whatever it says, but a bad value is the
    caller's error with either backend), under :func:`_ieee`."""
    quiet = _ieee(fn)

    @functools.wraps(fn)
    def call(*args: Any) -> Any:
        resolve_threads(args[-1], 0)
        return quiet(*args)

    return call


def _ieee(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with NumPy's floating-point warnings off: the reference computes as C does, and the
    inf and NaN that edge-case blocks (inf or NaN scales, 1e30 inputs) give are its results, not
    errors (the Numba kernels, like C, never warn)."""
    @functools.wraps(fn)
    def quiet(*args: Any) -> Any:
        with np.errstate(all="ignore"):
            return fn(*args)

    return quiet


def dequantize(
    raw: Any,
    qtype: QType,
    *,
    backend: str = "numba",
    threads: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode quantized blocks to float32 weights.

    ``raw`` is uint8 whose last dimension is a whole number of blocks: 1-D bytes, (n_blocks,
    block_bytes), or (rows, row_bytes) as a GGUF file stores a tensor. The result keeps the leading
    shape; its last dimension counts weights (as gguf-py's ``dequantize``). ``out``, if given, is a
    C-contiguous float32 array of exactly that shape that receives the result (and is returned):
    reusing it saves allocating, and page-faulting in, a new output on every call. An output of
    16 MiB or more (on a 16-byte boundary, as NumPy allocates it) is written with non-temporal
    stores, which leave it out of the caches (it would not fit them) and skip reading each line first.
    """
    fmt = get_format(qtype)
    fn = _op(fmt, backend, "dequantize")
    raw = as_bytes(raw, "raw")
    n_blocks = check_whole_blocks(raw, fmt, "raw")
    shape = raw.shape[:-1] + (n_blocks * fmt.block_weights,)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    else:
        check_out(out, shape, raw)
    fn(raw.reshape(-1, fmt.block_bytes), out.reshape(-1, fmt.block_weights), threads)
    return out


def quantize(
    x: Any, qtype: QType, *, imatrix: Any = None, backend: str = "numba", threads: int | None = None
) -> np.ndarray:
    """Quantize float32 weights, as llama.cpp's reference quantizer does, byte for byte.

    ``x`` is float32, 1-D or 2-D, finite, with a length (row length) that is a multiple of the block
    size (256 weights for the k-quants and IQ4_XS, 32 for the others). Returns uint8 (n_blocks,
    block_bytes) for 1-D input and (rows, row_bytes) for 2-D input.

    ``imatrix``: an importance matrix's entry for this tensor, float32 (row length,), finite: each
    column's importance (llama-imatrix's mean squared activation). The blocks are then fitted as
    ``llama-quantize --imatrix`` fits them (llama.cpp's ``quantize_<type>`` with ``quant_weights``);
    Q8_0 and MXFP4 ignore it, as llama.cpp does. Both backends, every weight format.
    """
    fmt = get_format(qtype)
    if imatrix is not None:
        return _quantize_imatrix(x, fmt, imatrix, backend, threads)
    fn = _op(fmt, backend, "quantize")
    x = as_float32(x, "x", (1, 2))
    n_blocks = check_row_length(x, fmt, "x")
    out = fn(x.reshape(-1, fmt.block_weights), threads)
    if x.ndim == 1:
        return out
    return out.reshape(x.shape[0], n_blocks * fmt.block_bytes)


def _quantize_imatrix(x: Any, fmt: BlockFormat, imatrix: Any, backend: str, threads: int | None) -> np.ndarray:
    """:func:`quantize` given an importance matrix."""
    if fmt.backend(backend).quantize_imatrix is None:
        raise ValueError(f"{fmt.name} has no quantizer with an importance matrix in the {backend} backend "
                         "(an activation format: llama.cpp quantizes weights with one)")
    fn = _op(fmt, backend, "quantize_imatrix")
    x = as_float32(x, "x", (1, 2))
    n_blocks = check_row_length(x, fmt, "x")
    imatrix = as_float32(imatrix, "imatrix", (1,))
    if imatrix.shape[0] != x.shape[-1]:
        raise ValueError(f"imatrix has {imatrix.shape[0]} values, x's rows have {x.shape[-1]} weights: "
                         "an importance matrix holds one value per column of the tensor")
    out = fn(x.reshape(-1, x.shape[-1]), imatrix, threads)
    return out if x.ndim == 1 else out.reshape(x.shape[0], n_blocks * fmt.block_bytes)


def quantize_q8_k(x: Any, *, backend: str = "numba", threads: int | None = None) -> np.ndarray:
    """Quantize activations to Q8_K blocks, as ``quantize_row_q8_K_ref``: uint8 (n_blocks, 292)."""
    return quantize(x, "Q8_K", backend=backend, threads=threads)


def gemv(
    w_raw: Any, x: Any, qtype: QType, *, backend: str = "numba", threads: int | None = None
) -> np.ndarray:
    """Matrix-vector product: (rows, row_bytes) quantized weights times float32 ``x``.

    ``x`` (one value per weight of a row) is first quantized to the activation format (Q8_K for
    k-quants, see :func:`quantize_activation`), once, as llama.cpp does; then each row is one
    ``vec_dot``. Returns float32 (rows,).
    ``threads``: None picks by the size of the work; 1 runs the serial kernel.
    To multiply the same weights many times (a model's decode step), check them once with
    :class:`Matrix`.
    """
    return Matrix(w_raw, qtype, backend=backend)(x, threads)


_FLOAT32 = np.dtype(np.float32)


class Matrix:
    """Quantized weights checked once for any number of gemv calls: ``Matrix(w_raw, qtype)(x)``
    equals ``gemv(w_raw, x, qtype)`` bit for bit, and each call checks only ``x`` (a float32
    vector of ``row_weights`` finite values, else the same errors as :func:`gemv`). With the numba
    backend a call is one kernel call, which quantizes ``x`` too.

    ``w`` is the weights as uint8 (rows, blocks_per_row, block_bytes), a view of ``w_raw`` when it
    is C-contiguous uint8: the caller must not change them while the matrix is in use.
    """

    __slots__ = ("fmt", "backend", "w", "row_weights", "_gemv", "_quantize", "_act_rows")

    def __init__(self, w_raw: Any, qtype: QType, *, backend: str = "numba") -> None:
        self.fmt = fmt = get_format(qtype)
        self.backend = backend
        self._gemv, self._quantize, self._act_rows = _gemv_ops(fmt, backend)
        w = as_bytes(w_raw, "w_raw")
        if w.ndim != 2:
            raise ValueError(f"w_raw must be 2-D (rows, row_bytes), got shape {w.shape}")
        n_blocks = check_whole_blocks(w, fmt, "w_raw")
        self.w = w.reshape(w.shape[0], n_blocks, fmt.block_bytes)
        self.row_weights = n_blocks * fmt.block_weights

    def _plain(self, x: Any) -> bool:
        """Whether ``x`` is already what the kernels take: a C-contiguous float32 vector of
        ``row_weights`` values (finite or not)."""
        return (type(x) is np.ndarray and x.dtype is _FLOAT32 and x.shape == (self.row_weights,)
                and x.flags.c_contiguous)

    def activation(self, x: Any) -> np.ndarray:
        """``x`` checked and quantized to the activation format, as :func:`quantize_activation`."""
        # The common case in one test (x . x is finite exactly when every value is, unless the
        # finite values overflow it); anything else goes through the checks that name the problem.
        if not (self._plain(x) and math.isfinite(np.vdot(x, x))):
            x = as_float32(x, "x", (1,))
            if x.shape[0] != self.row_weights:
                raise ValueError(
                    f"shape mismatch: w_raw rows hold {self.row_weights} weights "
                    f"({self.w.shape[1]} {self.fmt.name} blocks) but x has {x.shape[0]} values"
                )
        return self._quantize(x.reshape(self._act_rows), 1)

    def __call__(self, x: Any, threads: int | None = None) -> np.ndarray:
        """The weights times float32 ``x``: float32 (rows,), as :func:`gemv`."""
        if self.backend == "numba" and self._plain(x):
            # One kernel call: this package's gemv kernels quantize float32 x themselves (and
            # raise ValueError where x is not finite, as for a bad ``threads``: the checks below
            # then name the problem).
            try:
                return self._gemv(self.w, x, threads)
            except ValueError:
                pass
        act = self.activation(x)
        if self.backend == "reference":
            return np.concatenate([self._gemv(rows, act, threads) for rows in _row_chunks(self.w, self.fmt)])
        return self._gemv(self.w, act, threads)


# The NumPy reference of the dot products holds a few int64 values per weight: it runs on rows of
# about this many weights at a time (a 262,144 x 640 output head would otherwise take gigabytes).
REFERENCE_CHUNK_WEIGHTS = 1 << 22


def _row_chunks(w: np.ndarray, fmt: BlockFormat) -> list[np.ndarray]:
    """``w`` (rows, blocks_per_row, block_bytes) in consecutive groups of rows of about
    REFERENCE_CHUNK_WEIGHTS weights (at least one row; one empty group for no rows)."""
    step = max(1, REFERENCE_CHUNK_WEIGHTS // max(1, w.shape[1] * fmt.block_weights))
    return [w[i:i + step] for i in range(0, w.shape[0], step)] or [w]


def _dot_inputs(w_raw: Any, x: Any, fmt: BlockFormat, backend: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated gemv inputs: uint8 (rows, blocks_per_row, block_bytes) weights, and ``x``
    quantized once to the activation format by ``backend``: uint8 (blocks_per_row, act_block_bytes)."""
    m = Matrix(w_raw, fmt, backend=backend)
    return m.w, m.activation(x)


# (format name, backend) -> (the format, its gemv, its activation quantizer, the activation rows'
# shape): looked up once, as they cost a microsecond of each gemv call's few (one Matrix per call).
_GEMV_OPS: dict[tuple[str, str], tuple[BlockFormat, Callable[..., Any], Callable[..., Any], tuple[int, int]]] = {}


def _gemv_ops(fmt: BlockFormat, backend: str) -> tuple[Callable[..., Any], Callable[..., Any], tuple[int, int]]:
    """``fmt``'s gemv in ``backend``, its activation quantizer (:func:`_activation_op`) and the
    shape that quantizer takes the activation in, (-1, activation block weights)."""
    key = (fmt.name, backend) if type(backend) is str else None
    ops = _GEMV_OPS.get(key)
    if ops is None or ops[0] is not fmt:  # a format registered again under its name is looked up anew
        gemv_op = _op(fmt, backend, "gemv")
        quantize_act, act_fmt = _activation_op(fmt, backend)
        ops = (fmt, gemv_op, quantize_act, (-1, act_fmt.block_weights))
        if key is not None:
            _GEMV_OPS[key] = ops
    return ops[1:]


def _activation_op(fmt: BlockFormat, backend: str) -> tuple[Callable[..., Any], BlockFormat]:
    """How ``fmt``'s dot products quantize their activations, as llama.cpp's CPU backend does
    (``Ops.quantize_activation``, else the reference quantizer), and the activation format."""
    if fmt.activation is None:
        raise ValueError(f"{fmt.name} has no dot product, so no activation format")
    act_fmt = get_format(fmt.activation)
    ops = act_fmt.backend(backend)
    return _op(act_fmt, backend, "quantize_activation" if ops.quantize_activation else "quantize"), act_fmt


def quantize_activation(x: Any, qtype: QType, *, backend: str = "numba", threads: int | None = None) -> np.ndarray:
    """The activation blocks that ``gemv(w, x, qtype)`` multiplies ``qtype``'s weights with: 1-D
    float32 ``x`` quantized to ``qtype``'s activation format (Q8_K for the k-quants and IQ4_XS, Q8_0
    for Q4_0, Q5_0, Q8_0, IQ4_NL and MXFP4, Q8_1 for Q4_1 and Q5_1) as llama.cpp's CPU backend
    does on x86. Returns uint8 (n_blocks, act_block_bytes): what a kernel that takes quantized
    activations must be given to equal this package's dot products bit for bit."""
    fn, act_fmt = _activation_op(get_format(qtype), backend)
    x = as_float32(x, "x", (1,))
    check_row_length(x, act_fmt, "x")
    return fn(x.reshape(-1, act_fmt.block_weights), threads)


def dot_terms(w_raw: Any, x: Any, qtype: QType) -> DotTerms:
    """The exact parts of the dot products of ``gemv(w_raw, x, qtype)`` (:class:`DotTerms`), with
    ``x`` quantized by the reference: what a dot kernel's result is checked against."""
    fmt = get_format(qtype)
    if fmt.dot_terms is None:
        raise ValueError(f"{fmt.name} has no dot_terms: its dot products cannot be checked within a bound")
    w, act = _dot_inputs(w_raw, x, fmt, "reference")
    parts = [_ieee(fmt.dot_terms)(rows, act) for rows in _row_chunks(w, fmt)]
    return DotTerms(coef=np.concatenate([p.coef for p in parts]), ints=np.concatenate([p.ints for p in parts]),
                    abs_ints=np.concatenate([p.abs_ints for p in parts]))


def vec_dot(w_raw: Any, x: Any, qtype: QType, *, backend: str = "numba") -> float:
    """Dot product of one row of quantized weights (1-D bytes, or (n_blocks, block_bytes)) with
    float32 ``x``, which is first quantized to the activation format as llama.cpp does."""
    w = as_bytes(w_raw, "w_raw")
    if w.ndim > 2:
        raise ValueError(f"w_raw must be one row: 1-D bytes or (n_blocks, block_bytes), got shape {w.shape}")
    return float(gemv(w.reshape(1, -1), x, qtype, backend=backend, threads=1)[0])
