"""quantbench_kernels: GGUF block formats with a NumPy reference and Numba kernels, bit-identical.

Public API::

    dequantize(raw, qtype, *, backend="numba")  -> float32 weights
    quantize(x, qtype, *, backend="numba")      -> uint8 blocks
    quantize_q8_k(x, *, backend="numba")        -> uint8 Q8_K blocks
    quantize_activation(x, qtype, *, backend="numba") -> the activation blocks gemv(w, x, qtype) uses
    vec_dot(w_raw, x, qtype, *, backend="numba") -> float
    gemv(w_raw, x, qtype, *, backend="numba", threads=None) -> float32 (rows,)
    Matrix(w_raw, qtype, *, backend="numba")    -> weights checked once: m(x, threads=None) == gemv(...)
    dot_terms(w_raw, x, qtype)                  -> DotTerms: the exact parts of those dot products
    formats()                                   -> the registry of block formats

``backend`` is "numba" (the fast kernels) or "reference" (readable NumPy that reproduces llama.cpp).
"""

from .api import Matrix, dequantize, dot_terms, gemv, quantize, quantize_activation, quantize_q8_k, vec_dot
from .registry import BACKENDS, BlockFormat, DotTerms, Ops, formats, get_format, register

__all__ = [
    "BACKENDS",
    "BlockFormat",
    "DotTerms",
    "Matrix",
    "Ops",
    "dequantize",
    "dot_terms",
    "formats",
    "gemv",
    "get_format",
    "quantize",
    "quantize_activation",
    "quantize_q8_k",
    "register",
    "vec_dot",
]
