"""The one registry of block formats.

Each format module in :mod:`quantbench_kernels.qtypes` declares a :class:`BlockFormat` (its layout and
reference) and the spec of its kernels' loops; :mod:`quantbench_kernels.loops`, generated from those
specs, calls :func:`register` with the format and its Numba ops. Everything else (the public API,
the Hypothesis strategies, the benchmarks, the pytest plugin) finds formats and their implementations
here, never through if/else chains on names.

Sizes come from ``gguf.GGML_QUANT_SIZES`` so that they cannot drift from gguf-py and llama.cpp.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

if TYPE_CHECKING:
    from .compilation import Loops

# Signatures of the per-backend operations (inputs are already validated and C-contiguous):
#   dequantize(blocks uint8 (n_blocks, block_bytes), out float32 (n_blocks, block_weights), threads)
#       -> None (writes out)
#   quantize(x float32 (n_blocks, block_weights), threads)    -> uint8 (n_blocks, block_bytes)
#   gemv(w uint8 (rows, blocks_per_row, block_bytes), act uint8 (blocks_per_row, act_block_bytes),
#        threads) -> float32 (rows,)      [act holds the activation format's blocks, e.g. Q8_K;
#        the numba backend's also takes the float32 values, 1-D, and quantizes them in the call]
#   quantize_activation: as quantize       [an activation format quantized as for a dot product]
#   quantize_imatrix(x float32 (rows, n_per_row), imatrix float32 (n_per_row,), threads)
#       -> uint8 (rows * n_per_row / block_weights, block_bytes)   [llama.cpp's quantize_<type> with
#       quant_weights: each column's importance, as ``llama-quantize --imatrix`` passes it]
DequantizeFn = Callable[[np.ndarray, np.ndarray, "int | None"], None]
QuantizeFn = Callable[[np.ndarray, "int | None"], np.ndarray]
QuantizeImatrixFn = Callable[[np.ndarray, np.ndarray, "int | None"], np.ndarray]
GemvFn = Callable[[np.ndarray, np.ndarray, "int | None"], np.ndarray]
#   dot_terms(w uint8 (rows, blocks_per_row, block_bytes), act uint8 (blocks_per_row, act_block_bytes))
#       -> DotTerms (reference only: what the conformance model of the dot products is built on)
DotTermsFn = Callable[[np.ndarray, np.ndarray], "DotTerms"]
#   another of llama.cpp's quantizers of a format (reference only, BlockFormat.quantizers):
#   x float32 (n_blocks, block_weights) -> (uint8 (n_blocks, block_bytes), bool (n_blocks, block_bytes):
#   which bytes llama.cpp defines; False where its C leaves them uninitialised)
OtherQuantizerFn = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray]"]

BACKENDS = ("numba", "reference")

# gguf-py still lists Q8_1's layout from before 2024 (f32 d and s: 40 bytes); llama.cpp's is
# 36 bytes (f16 d and s). Q8_1 only ever holds activations, in the CPU backend's buffers, never
# a tensor of a GGUF file: its size is llama.cpp's.
GGML_SIZES_NOT_IN_GGUF_PY = {GGMLQuantizationType.Q8_1: (32, 36)}


@dataclass(frozen=True)
class Ops:
    """One backend's implementation of a format. ``None`` means the operation does not exist.

    ``quantize_activation`` is how llama.cpp's CPU backend quantizes the activation vector of a dot
    product to this (activation) format, its ``from_float``, where that differs from the format's
    reference quantizer ``quantize`` (``from_float_ref``): on x86, Q8_0 and Q8_1 multiply by
    127 / max and round half to even, the reference divides by max / 127 and rounds half away.

    ``quantize_imatrix`` quantizes with an importance matrix, as ``llama-quantize --imatrix`` does
    (llama.cpp's ``quantize_<type>`` given ``quant_weights``: the ``_impl`` paths).
    """

    dequantize: DequantizeFn | None = None
    quantize: QuantizeFn | None = None
    gemv: GemvFn | None = None
    quantize_activation: QuantizeFn | None = None
    quantize_imatrix: QuantizeImatrixFn | None = None


@dataclass(frozen=True)
class DotTerms:
    """Rows of dot products split into the parts that every correct kernel computes exactly.

    llama.cpp's dot products sum integer products (weight quant x sub-block scale x activation
    quant, or a sub-block min x activation quant) exactly, in int32, then multiply such integer
    partial sums by two float scales (the weight block's ``d`` or ``dmin``, and the activation
    block's ``d``) and add the results in float32. Only that float part (its order, fused
    multiply-adds) differs between correct kernels. Per row r and term t:

    - ``coef[r, t]``: float64, the product of the two float scales, exact (a float32 times a float16
      needs 35 significant bits);
    - ``ints[r, t]``: int64, the exact integer sum the coefficient multiplies;
    - ``abs_ints[r, t]``: int64, the sum over the term's weights of the magnitudes of their integer
      products, which bounds every integer partial sum a kernel may split the term into.

    The exact value of row r is ``sum_t coef[r, t] * ints[r, t]``.
    """

    coef: np.ndarray  # float64 (rows, terms)
    ints: np.ndarray  # int64 (rows, terms)
    abs_ints: np.ndarray  # int64 (rows, terms)


@dataclass(frozen=True)
class BlockFormat:
    """A GGUF block format: its identity, its byte layout and its implementations.

    ``block_weights`` and ``block_bytes`` are read from ``gguf.GGML_QUANT_SIZES`` (but see
    :data:`GGML_SIZES_NOT_IN_GGUF_PY`); ``block_dtype`` is
    the structured NumPy dtype of one block (little-endian), whose size must equal ``block_bytes``.
    ``activation`` names the format that the activation vector is quantized to for dot products.
    ``fill_derived``, if set, recomputes in place the fields of structured blocks that are derived
    from others (Q8_K's ``bsums``), so that generated blocks are valid.
    ``dot_terms`` (reference only) splits dot products into their exact parts (:class:`DotTerms`).
    ``loops`` (:class:`quantbench_kernels.compilation.Loops`) is what the Numba kernels' loops around
    the format module's block kernels are generated from (``tools/generate_loops.py``).
    ``quantizer`` names the llama.cpp function that ``quantize`` reproduces (default
    ``quantize_row_<type>_ref``); ``quantizers`` holds llama.cpp's other quantizers of the format, by
    function name, in the reference backend only (IQ4_NL's ``quantize_row_iq4_nl_ref``, which skips
    the scale search of ``quantize_iq4_nl``): a kernel that follows one declares it.
    """

    name: str
    qtype: GGMLQuantizationType
    block_dtype: np.dtype
    reference: Ops
    numba: Ops = Ops()
    activation: str | None = None
    fill_derived: Callable[[np.ndarray], None] | None = None
    dot_terms: DotTermsFn | None = None
    loops: Loops | None = None
    quantizer: str = ""
    quantizers: dict[str, OtherQuantizerFn] = field(default_factory=dict)
    bits_per_weight: float = field(init=False)
    block_weights: int = field(init=False)
    block_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        weights, nbytes = GGML_SIZES_NOT_IN_GGUF_PY.get(self.qtype) or GGML_QUANT_SIZES[self.qtype]
        if self.block_dtype.itemsize != nbytes:
            raise TypeError(
                f"{self.name}: block_dtype is {self.block_dtype.itemsize} bytes, "
                f"gguf.GGML_QUANT_SIZES says {nbytes}"
            )
        object.__setattr__(self, "block_weights", weights)
        object.__setattr__(self, "block_bytes", nbytes)
        object.__setattr__(self, "bits_per_weight", 8 * nbytes / weights)
        if not self.quantizer:
            object.__setattr__(self, "quantizer", f"quantize_row_{c_name(self.name)}_ref")

    @property
    def quantizer_names(self) -> tuple[str, ...]:
        """The llama.cpp quantizers a quantize kernel of this format may follow: ``quantizer`` first."""
        return (self.quantizer, *self.quantizers)

    def backend(self, name: str) -> Ops:
        """The implementation called ``name`` ("numba" or "reference")."""
        if name not in BACKENDS:
            raise ValueError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
        return getattr(self, name)

    def supports(self, op: str) -> bool:
        """Whether both backends implement ``op`` (a field of :class:`Ops`: "dequantize", "quantize",
        "gemv" or "quantize_activation"; ``vec_dot`` is a one-row ``gemv``)."""
        if op not in Ops.__dataclass_fields__:
            raise ValueError(f"unknown op {op!r}: the registry's ops are {', '.join(Ops.__dataclass_fields__)}")
        return getattr(self.reference, op) is not None and getattr(self.numba, op) is not None


def c_name(name: str) -> str:
    """A format's name as llama.cpp's C functions spell it: q4_0, iq4_nl, q4_K, q8_K."""
    low = name.lower()
    return low[:-2] + "_K" if low.endswith("_k") else low


_FORMATS: dict[str, BlockFormat] = {}


def _declared_in(fmt: BlockFormat) -> str:
    return getattr(fmt.reference.dequantize or fmt.reference.quantize, "__module__", "")


def register(fmt: BlockFormat) -> BlockFormat:
    """Add ``fmt`` to the registry (once per name) and return it.

    The same format module imported again (pytest's pytester restores ``sys.modules`` between tests,
    and the next import runs the module anew) replaces its earlier registration; a second format of
    the same name from anywhere else is refused.
    """
    existing = _FORMATS.get(fmt.name)
    if existing is not None and (existing is fmt or _declared_in(existing) != _declared_in(fmt)):
        raise ValueError(f"format {fmt.name} is already registered")
    _FORMATS[fmt.name] = fmt
    return fmt


def formats(*ops: str) -> tuple[BlockFormat, ...]:
    """Every registered format that has each of ``ops`` in both backends (:meth:`BlockFormat.supports`:
    ``formats("gemv")`` are the formats with a dot product), in the order of llama.cpp's type ids
    (Q4_0, Q4_1, ..., Q8_K, IQ4_NL, IQ4_XS, MXFP4): the same whatever order the modules were imported in."""
    _load_formats()
    ordered = sorted(_FORMATS.values(), key=lambda f: int(f.qtype))
    return tuple(f for f in ordered if all(f.supports(op) for op in ops))


def get_format(qtype: str | GGMLQuantizationType | BlockFormat) -> BlockFormat:
    """Look a format up by name ("Q4_K", case-insensitive) or ``GGMLQuantizationType``."""
    if type(qtype) is str and (fmt := _FORMATS.get(qtype)) is not None:
        return fmt  # the common case first: a gemv call's whole fixed cost is a few microseconds
    _load_formats()
    if isinstance(qtype, BlockFormat):
        return qtype
    if isinstance(qtype, GGMLQuantizationType):
        key = qtype.name
    elif isinstance(qtype, str):
        key = qtype.upper()
    else:
        raise ValueError(
            f"qtype must be a format name or gguf.GGMLQuantizationType, got {type(qtype).__name__}"
        )
    try:
        return _FORMATS[key]
    except KeyError:
        known = ", ".join(_FORMATS)
        raise ValueError(f"unknown or unsupported qtype {qtype!r}: registered formats are {known}") from None


_LOADED = False


def _load_formats() -> None:
    # Importing the generated loops imports every format module and registers each with its Numba
    # ops. Once is enough: import_module on every lookup cost about 1 us, a tenth of a small gemv's
    # fixed cost.
    global _LOADED
    if not _LOADED:
        importlib.import_module(f"{__package__}.loops")
        _LOADED = True
