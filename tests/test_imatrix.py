"""Quantizing with an importance matrix: the reference equals llama.cpp's quantizers given
``quant_weights`` (libgguf's ``quantize_rows(..., imatrix=)``) byte for byte, and bad importance is
refused naming what is wrong."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import quantbench_kernels as qk
from pytest_quantbench import strategies as qst
from pytest_quantbench.bitexact import assert_bit_identical

IMATRIX = [f.name for f in qk.formats() if f.reference.quantize_imatrix is not None]
# What llama-imatrix's averaged squares look like, and the edges: zeros (columns never seen),
# huge and subnormal values, one column alone, all equal.
_ENTRY = st.one_of(st.just(0.0), st.floats(2.0**-20, 2.0**14, width=32), st.floats(2.0**100, 2.0**120, width=32),
                   st.floats(2.0**-149, 2.0**-127, width=32))


def importance(n: int) -> st.SearchStrategy[np.ndarray]:
    """float32 (n,) importance vectors."""
    one_hot = st.integers(0, n - 1).map(lambda k: np.eye(1, n, k, dtype=np.float32)[0])
    uniform = st.floats(2.0**-10, 2.0**10, width=32).map(lambda v: np.full(n, v, dtype=np.float32))
    return st.one_of(hnp.arrays(np.float32, n, elements=_ENTRY), one_hot, uniform)


def test_every_weight_format_quantizes_with_an_importance_matrix_in_both_backends():
    weights = {f.name for f in qk.formats("gemv")}
    assert weights == set(IMATRIX) == {f.name for f in qk.formats("quantize_imatrix")}


@pytest.mark.parametrize("name", IMATRIX)
@given(data=st.data())
def test_quantize_with_an_imatrix_equals_llama_cpp(name, data, libgguf):
    rows = data.draw(st.integers(1, 3))
    x = data.draw(qst.float_rows(name, n_blocks=st.integers(1, 3) if rows == 1 else st.just(2)))
    x = np.tile(x, (rows, 1)) * np.linspace(1, 0.5, rows, dtype=np.float32)[:, None] if rows > 1 else x[None, :]
    imatrix = data.draw(importance(x.shape[1]))
    expected = libgguf.quantize_rows(x, int(qk.get_format(name).qtype), imatrix=imatrix)
    got = qk.quantize(x, name, imatrix=imatrix, backend="reference")
    assert_bit_identical(expected.reshape(-1), got.reshape(-1), "quantized bytes")


NUMBA = [f.name for f in qk.formats() if f.numba.quantize_imatrix is not None]


@pytest.mark.parametrize("name", NUMBA)
@given(data=st.data())
def test_the_numba_kernels_with_an_imatrix_equal_the_reference(name, data):
    rows = data.draw(st.integers(1, 4))
    x = np.stack([data.draw(qst.float_rows(name, n_blocks=st.just(3))) for _ in range(rows)])
    imatrix = data.draw(importance(x.shape[1]))
    expected = qk.quantize(x, name, imatrix=imatrix, backend="reference")
    for threads in (1, 2):
        assert_bit_identical(expected, qk.quantize(x, name, imatrix=imatrix, threads=threads), f"{threads} thread(s)")


@pytest.mark.slow  # whole matrices (16 x 1024 weights per format) in the slow tier, a few rows in the fast one
@pytest.mark.parametrize("name", IMATRIX)
def test_quantize_with_an_imatrix_equals_llama_cpp_on_a_whole_matrix(name, libgguf):
    rng = np.random.default_rng(1)
    w = (rng.standard_t(4, size=(16, 1024)) * 0.02).astype(np.float32)
    imatrix = (rng.gamma(0.5, size=1024) * 1e-3).astype(np.float32)
    imatrix[::97] = 0
    expected = libgguf.quantize_rows(w, int(qk.get_format(name).qtype), imatrix=imatrix)
    assert_bit_identical(expected, qk.quantize(w, name, imatrix=imatrix, backend="reference"), "reference")
    if name in NUMBA:
        assert_bit_identical(expected, qk.quantize(w, name, imatrix=imatrix, threads=2), "Numba, 2 threads")


def test_an_imatrix_changes_what_the_quantizer_chooses():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    imatrix = np.zeros(256, dtype=np.float32)
    imatrix[::8] = 1
    plain = qk.quantize(x, "Q4_0", backend="reference")
    weighted = qk.quantize(x, "Q4_0", imatrix=imatrix, backend="reference")
    assert weighted.shape == plain.shape
    assert not np.array_equal(weighted, plain)
    back = qk.dequantize(weighted, "Q4_0", backend="reference")
    err_kept = np.abs(back - x)[:, ::8].mean()
    err_plain = np.abs(qk.dequantize(plain, "Q4_0", backend="reference") - x)[:, ::8].mean()
    assert err_kept < err_plain  # the important columns come out closer


@pytest.mark.parametrize("imatrix, message", [
    (np.ones(100, np.float32), "imatrix has 100 values, x's rows have 64 weights"),
    (np.full(64, np.nan, np.float32), "imatrix contains non-finite values"),
    (np.ones(64, np.float64), "imatrix must have dtype float32"),
    (np.ones((2, 32), np.float32), "imatrix must be 1-D"),
    ([1.0] * 64, "imatrix must be a float32 numpy array"),
])
def test_bad_importance_is_refused_naming_what_is_wrong(imatrix, message):
    x = np.ones((2, 64), dtype=np.float32)
    with pytest.raises(ValueError, match=message):
        qk.quantize(x, "Q4_0", imatrix=imatrix, backend="reference")


def test_an_activation_format_has_no_quantizer_with_an_importance_matrix():
    x = np.ones(256, dtype=np.float32)
    for backend in qk.BACKENDS:
        with pytest.raises(ValueError, match=f"Q8_K has no quantizer with an importance matrix in the {backend} "
                                             "backend \\(an activation format"):
            qk.quantize(x, "Q8_K", imatrix=np.ones(256, np.float32), backend=backend)
