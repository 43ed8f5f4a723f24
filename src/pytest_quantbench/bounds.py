"""The rounding model of the dot products: the exact value of each row and a rigorous bound on the
error of any correct kernel's float result, for llama.cpp's quantized activations (:func:`dot_bound`)
and for float32 activations times the dequantized weights (:func:`float_dot_bound`). The derivations
are in each function's docstring and in docs/conformance.md; :mod:`pytest_quantbench.conformance`
holds kernels to them."""

from __future__ import annotations

import math

import numpy as np

import quantbench_kernels as qk

# Unit roundoff of the precisions a kernel may declare that it computes in.
UNIT_ROUNDOFF = {"float32": 2.0**-24, "float16": 2.0**-11, "bfloat16": 2.0**-8}
# Roundings of one decoded weight in a lower precision: d * sc, times q, dmin * m, the subtraction.
DEQUANTIZE_ROUNDINGS = 4
# Roundings of one dot-product term besides the additions: the two scales' product (d * yd), the
# integer partial sum's conversion to float, and their product.
TERM_ROUNDINGS = 3
# The dot products' accumulation model (see dot_bound): float additions per block on any term's
# path (at least; a format whose dot has more terms per block, as IQ4_XS's eight sub-blocks, gets
# one per term), and additions of the final reduction of a kernel's accumulators.
ADDS_PER_BLOCK = 2
FINAL_ADDS = 32
# Absolute error one operation may make in the subnormal range of each precision (half its
# smallest subnormal; bfloat16 has float32's exponent range and 7 fraction bits).
UNDERFLOW = {"float32": 2.0**-150, "float16": 2.0**-25, "bfloat16": 2.0**-134}
FLOAT32_UNDERFLOW = UNDERFLOW["float32"]
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The largest finite value of each precision (bfloat16's is float32's to 3 significant bits).
LARGEST = {"float32": FLOAT32_MAX, "float16": 65504.0, "bfloat16": 3.3895313892515355e38}
# Roundings of one term of a float-activation dot besides its additions: x converted to the
# kernel's precision, and the product (the weight's own decoding is bounded apart).
FLOAT_TERM_ROUNDINGS = 2



def relative_error(n: int, u: float) -> float:
    """(1 + u)^n - 1: the largest relative error of a value carrying n roundings of unit roundoff u
    (|prod(1 + delta_i) - 1| with |delta_i| <= u). Higham's gamma_n = n u / (1 - n u) bounds it
    while n u < 1; this stays finite beyond (float16 sums of 2,048 terms and more)."""
    return math.expm1(n * math.log1p(u))


def dot_bound(terms: qk.DotTerms, n_blocks: int, unit_roundoff: float = UNIT_ROUNDOFF["float32"],
              adds_per_block: int = ADDS_PER_BLOCK, final_adds: int = FINAL_ADDS
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact value of each row's dot product (rows of ``n_blocks`` blocks), a rigorous bound on
    the error of any correct kernel's float result, and the sum of the terms' magnitudes, each
    float64 (rows,).

    The model: a kernel multiplies exact integer partial sums of each block by that block's scale
    product (rounded: d * yd) and adds the float terms in any order, fused or not, such that no term
    passes through more than D = n_blocks x ``adds_per_block`` + ``final_adds`` additions (a kernel
    that keeps accumulators across blocks, as llama.cpp's generic and SIMD dots do, adds 1 or 2 per
    block and then reduces its accumulators). Each computed term then carries at most
    n = D + TERM_ROUNDINGS relative roundings, so the error is at most gamma_n = (1 + u)^n - 1
    (:func:`relative_error`; n u / (1 - n u) while that is below 1) times the sum of the terms'
    magnitudes (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., lemma 3.1 and
    section 4.2), which is at most the sum over blocks of |scale product| x
    the sum of |integer product| over the weights (``DotTerms.abs_ints``: it bounds every integer
    partial sum a kernel may form). Added: n times the absolute error of one operation in the
    subnormal range, that error of each scale product times the integers it multiplies (a
    subnormal scale product, as MXFP4's smallest exponents give, loses absolute precision that
    the product with the integer sum scales up), and the float64 rounding of the exact value's
    own evaluation (2^-52 of the magnitude).
    """
    n = n_blocks * adds_per_block + final_adds + TERM_ROUNDINGS
    gamma = relative_error(n, unit_roundoff)
    with np.errstate(all="ignore"):
        products = terms.coef * terms.ints.astype(np.float64)
        magnitude = (np.abs(terms.coef) * terms.abs_ints.astype(np.float64)).sum(axis=1)
        exact = np.array([math.fsum(row) if np.isfinite(row).all() else row.sum() for row in products])
        # A scale product in the subnormal range (MXFP4's 2**-128 times a small d) is off by up to
        # half the smallest subnormal, and the integer it multiplies scales that error up.
        scaled_underflow = (1 + gamma) * FLOAT32_UNDERFLOW * terms.abs_ints.astype(np.float64).sum(axis=1)
        bound = gamma * magnitude + n * FLOAT32_UNDERFLOW + scaled_underflow + 2.0**-52 * magnitude
    return exact, bound, magnitude


def float_dot_bound(weights: np.ndarray, x: np.ndarray, block_weights: int, precision: str = "float32",
                    adds_per_block: int | None = None, final_adds: int = FINAL_ADDS
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The float-activation model: the exact value of each row of ``weights`` (float32 (rows, n),
    the reference's dequantized weights) times float32 ``x`` (n,), a rigorous bound on the error of
    any correct kernel that multiplies x by the dequantized weights in ``precision``, and the sum
    of the terms' magnitudes, each float64 (rows,).

    The model, in the style of :func:`dot_bound`: the kernel decodes each weight (in float32 the
    reference's value, in a lower precision within DEQUANTIZE_ROUNDINGS roundings of the largest
    magnitude B_i of its block, as :func:`check_dequantize` allows), converts x_i to its precision,
    multiplies (FLOAT_TERM_ROUNDINGS roundings with the conversion) and adds the products in any
    order, fused or not, such that no product passes through more than D = blocks x
    ``adds_per_block`` + ``final_adds`` additions (``adds_per_block`` defaults to a block's weights:
    a plain loop over the row). With n = D + FLOAT_TERM_ROUNDINGS and gamma_n = (1 + u)^n - 1
    (:func:`relative_error`; in float16 it passes 1 at about 1,400 terms, and the bound says little):

        |error| <= gamma_n sum |w_i x_i| + (1 + gamma_n) R u sum B_i |x_i| + underflow,

    R = DEQUANTIZE_ROUNDINGS (also in float32, where another order of a weight's decoding may
    round differently), and underflow = (1 + gamma_n) (R + 2) n_weights eta, eta the absolute
    error of one operation in the precision's subnormal range (:data:`UNDERFLOW`); plus the float64
    rounding of the exact value's own evaluation. The products w_i x_i of two float32 values are
    exact in float64, so the exact value is their correctly rounded sum (math.fsum)."""
    u = UNIT_ROUNDOFF[precision]
    rows, n = weights.shape
    n_blocks = max(1, n // block_weights)
    depth = n_blocks * (adds_per_block or block_weights) + final_adds
    k = depth + FLOAT_TERM_ROUNDINGS
    gamma = relative_error(k, u)
    with np.errstate(all="ignore"):
        w = weights.astype(np.float64)
        products = w * x.astype(np.float64)
        exact = np.array([math.fsum(row) if np.isfinite(row).all() else row.sum() for row in products])
        magnitude = np.abs(products).sum(axis=1)
        block_max = np.nanmax(np.where(np.isfinite(w), np.abs(w), 0.0).reshape(rows, -1, block_weights), axis=2)
        decoded = (block_max[:, :, None] * np.abs(x.astype(np.float64)).reshape(1, -1, block_weights)).sum(axis=(1, 2))
        bound = (gamma * magnitude + (1 + gamma) * DEQUANTIZE_ROUNDINGS * u * decoded
                 + (1 + gamma) * (DEQUANTIZE_ROUNDINGS + 2) * n * UNDERFLOW[precision] + 2.0**-52 * magnitude)
    return exact, bound, magnitude
