"""Round-trip and dot-product accuracy on llama.cpp's own test input (tests/test-quantize-fns)."""

import numpy as np
import pytest

import quantbench_kernels as qk


def cos_input(n: int = 4096, offset: float = 0.0) -> np.ndarray:
    """llama.cpp's test-quantize-fns input: 0.1 + 2 cos(i + offset)."""
    return (0.1 + 2 * np.cos(np.arange(n) + offset)).astype(np.float32)


# name: (max RMSE-like error sqrt(sum d^2)/n, max |vec_dot - f64 dot| / n), llama.cpp's limits
# (MAX_QUANTIZATION_TOTAL_ERROR, _2BITS, _3BITS and MAX_DOT_PRODUCT_ERROR, _LOWBIT).
LIMITS = {"Q2_K": (0.0075, 0.04), "Q3_K": (0.0040, 0.02), "Q4_K": (0.002, 0.02), "Q5_K": (0.002, 0.02),
          "Q6_K": (0.002, 0.02)} | {name: (0.002, 0.02) for name in (
              "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "IQ4_XS", "MXFP4")}


def test_every_weight_format_has_its_limits():
    assert sorted(LIMITS) == sorted(f.name for f in qk.formats() if f.activation is not None)


@pytest.mark.parametrize("backend", qk.BACKENDS)
@pytest.mark.parametrize("name", sorted(LIMITS))
def test_round_trip_error_is_within_llama_cpp_limit(name, backend, record_property):
    x = cos_input(4096)
    back = qk.dequantize(qk.quantize(x, name, backend=backend), name, backend=backend).reshape(-1)
    err = float(np.sqrt(np.sum((back.astype(np.float64) - x) ** 2)) / x.size)
    record_property("round_trip_error", err)
    print(f"{name} {backend}: round-trip error {err:.6f} (limit {LIMITS[name][0]})")
    assert err < LIMITS[name][0]
    assert err > 0  # a lossless round trip would mean quantize did not quantize


@pytest.mark.parametrize("backend", qk.BACKENDS)
@pytest.mark.parametrize("name", sorted(LIMITS))
def test_vec_dot_error_is_within_llama_cpp_limit(name, backend, record_property):
    w = cos_input(4096)
    y = cos_input(4096, offset=1.0)
    exact = float(np.dot(w.astype(np.float64), y.astype(np.float64)))
    got = qk.vec_dot(qk.quantize(w, name, backend=backend), y, name, backend=backend)
    err = abs(got - exact) / w.size
    record_property("vec_dot_error", err)
    print(f"{name} {backend}: vec_dot error {err:.6f} (limit {LIMITS[name][1]})")
    assert err < LIMITS[name][1]


@pytest.mark.parametrize("name", sorted(LIMITS))
def test_gemv_is_normwise_close_to_float64(name):
    rng = np.random.default_rng(11)
    w = (rng.standard_t(5, size=(64, 1024)) * 0.02).astype(np.float32)
    x = rng.standard_normal(1024).astype(np.float32)
    got = qk.gemv(qk.quantize(w, name), x, name).astype(np.float64)
    exact = w.astype(np.float64) @ x.astype(np.float64)
    # Normwise: rows whose true value is near zero would fail any per-element relative bound.
    rel = np.abs(got - exact) / (np.linalg.norm(w, axis=1) * np.linalg.norm(x))
    # The bound follows the bits: a quarter of 2^-bits of the row's norm, plus the 8-bit activations' share.
    bits = qk.get_format(name).bits_per_weight
    assert rel.max() < 2.0 ** (-bits) / 4 + 0.002, rel.max()
