"""Bad input gets a ValueError that names the problem, from both backends, before any kernel runs."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import quantbench_kernels as qk
from pytest_quantbench import strategies as qst
from pytest_quantbench.bitexact import assert_bit_identical

BACKENDS = qk.BACKENDS
KQ = ["Q2_K", "Q4_K"]


def _blocks(name, n=2):
    return qk.quantize(np.linspace(-1, 1, 256 * n, dtype=np.float32), name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", KQ)
def test_dequantize_refuses_wrong_dtype(name, backend):
    raw = _blocks(name)
    with pytest.raises(ValueError, match="dtype uint8.*int8"):
        qk.dequantize(raw.view(np.int8), name, backend=backend)
    with pytest.raises(ValueError, match="dtype uint8.*float32"):
        qk.dequantize(np.zeros(qk.get_format(name).block_bytes // 4, np.float32), name, backend=backend)
    with pytest.raises(ValueError, match="uint8 numpy array or bytes.*list"):
        qk.dequantize(list(raw.reshape(-1)), name, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", KQ)
def test_dequantize_refuses_partial_blocks(name, backend):
    raw = _blocks(name).reshape(-1)
    bb = qk.get_format(name).block_bytes
    with pytest.raises(ValueError, match=f"{raw.size - 1} bytes, not a whole number of {name} blocks .{bb} bytes"):
        qk.dequantize(raw[:-1], name, backend=backend)
    with pytest.raises(ValueError, match="at least one dimension"):
        qk.dequantize(np.uint8(3), name, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", KQ + ["Q8_K"])
def test_quantize_refuses_wrong_dtype_length_and_rank(name, backend):
    with pytest.raises(ValueError, match="dtype float32, got dtype float64"):
        qk.quantize(np.zeros(256), name, backend=backend)
    with pytest.raises(ValueError, match="row length of 300 values, not a multiple of the .* block size .256"):
        qk.quantize(np.zeros(300, np.float32), name, backend=backend)
    with pytest.raises(ValueError, match="row length of 100"):
        qk.quantize(np.zeros((2, 100), np.float32), name, backend=backend)
    with pytest.raises(ValueError, match="1-D or 2-D, got shape"):
        qk.quantize(np.zeros((2, 2, 256), np.float32), name, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", KQ + ["Q8_K"])
@given(data=st.data())
def test_quantize_refuses_non_finite_values(name, backend, data):
    x = data.draw(qst.non_finite_rows(name))
    with pytest.raises(ValueError, match="non-finite values .NaN or inf., first at index"):
        qk.quantize(x, name, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", KQ)
def test_gemv_and_vec_dot_refuse_mismatched_shapes(name, backend):
    w = _blocks(name, 4).reshape(2, -1)  # 2 rows of 512 weights
    with pytest.raises(ValueError, match="shape mismatch: w_raw rows hold 512 weights .2 .* blocks. but x has 256"):
        qk.gemv(w, np.zeros(256, np.float32), name, backend=backend)
    with pytest.raises(ValueError, match="w_raw must be 2-D"):
        qk.gemv(w.reshape(-1), np.zeros(512, np.float32), name, backend=backend)
    with pytest.raises(ValueError, match="x must be 1-D"):
        qk.gemv(w, np.zeros((1, 512), np.float32), name, backend=backend)
    with pytest.raises(ValueError, match="not a whole number"):
        qk.gemv(w[:, :-1], np.zeros(512, np.float32), name, backend=backend)
    with pytest.raises(ValueError, match="shape mismatch"):
        qk.vec_dot(w[0], np.zeros(1024, np.float32), name, backend=backend)
    with pytest.raises(ValueError, match="dtype float32"):
        qk.vec_dot(w[0], np.zeros(512), name, backend=backend)
    with pytest.raises(ValueError, match="non-finite"):
        qk.vec_dot(w[0], np.full(512, np.nan, np.float32), name, backend=backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", KQ)
def test_a_matrix_checked_once_still_checks_every_x_and_equals_gemv(name, backend):
    w = _blocks(name, 4).reshape(2, -1)
    m = qk.Matrix(w, name, backend=backend)
    x = np.random.default_rng(0).standard_normal(1024).astype(np.float32)
    assert_bit_identical(qk.gemv(w, x[:512], name, backend=backend), m(x[:512]), f"{name} Matrix")
    # A strided view is copied, not misread; values whose squares overflow are finite, and taken.
    assert_bit_identical(qk.gemv(w, x[::2].copy(), name, backend=backend), m(x[::2]), f"{name} strided x")
    big = np.full(512, 3e30, np.float32)
    assert_bit_identical(qk.gemv(w, big, name, backend=backend), m(big), f"{name} large x")
    with pytest.raises(ValueError, match="shape mismatch: w_raw rows hold 512 weights .2 .* blocks. but x has 256"):
        m(x[:256])
    with pytest.raises(ValueError, match="non-finite values .NaN or inf., first at index 3"):
        m(np.where(np.arange(512) == 3, np.inf, 1).astype(np.float32))
    with pytest.raises(ValueError, match="dtype float32"):
        m(x[:512].astype(np.float64))


@pytest.mark.parametrize("op", ["dequantize", "quantize", "gemv"])
def test_unknown_qtype_and_backend_are_refused(op):
    args = {
        "dequantize": (np.zeros(144, np.uint8),),
        "quantize": (np.zeros(256, np.float32),),
        "gemv": (np.zeros((1, 144), np.uint8), np.zeros(256, np.float32)),
    }[op]
    fn = getattr(qk, op)
    with pytest.raises(ValueError, match="unknown or unsupported qtype 'IQ2_XXS'"):
        fn(*args, "IQ2_XXS")
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        fn(*args, "Q4_K", backend="cuda")
    with pytest.raises(ValueError, match=r"unknown backend \['numba'\]"):  # unhashable: no cache lookup
        fn(*args, "Q4_K", backend=["numba"])


def test_gemv_takes_the_checked_paths_for_anything_but_plain_weights():
    """gemv's fast paths (a format name as registered, C-contiguous uint8 weights) change nothing
    for the other spellings: same bits, or the same errors."""
    rng = np.random.default_rng(3)
    w = qk.quantize(qst.weight_like(rng, (4, 512)), "Q4_K")
    x = qst.weight_like(rng, (512,))
    expected = qk.gemv(w, x, "Q4_K")
    wide = np.zeros((4, 2 * w.shape[1]), np.uint8)
    wide[:, ::2] = w  # a strided view of the same bytes
    for same in (qk.gemv(w, x, "q4_k"), qk.gemv(wide[:, ::2], x, "Q4_K"), qk.gemv(w, x, qk.get_format("Q4_K")),
                 qk.gemv(w, x, qk.get_format("Q4_K").qtype)):
        np.testing.assert_array_equal(same, expected)
    with pytest.raises(ValueError, match="dtype uint8"):
        qk.gemv(w.view(np.int8), x, "Q4_K")
    with pytest.raises(ValueError, match="must be 2-D"):
        qk.gemv(w.reshape(-1), x, "Q4_K")


def test_q8_k_has_no_gemv_and_says_so():
    with pytest.raises(ValueError, match="Q8_K has no gemv"):
        qk.gemv(np.zeros((1, 292), np.uint8), np.zeros(256, np.float32), "Q8_K")


@pytest.mark.parametrize("backend", ["numba", "reference"])
@pytest.mark.parametrize("threads", [0, -1, "x", 1.5, True])
def test_threads_must_be_positive_with_either_backend(backend, threads):
    w = _blocks("Q4_K").reshape(1, -1)
    x = np.zeros(512, np.float32)
    for call in (lambda: qk.gemv(w, x, "Q4_K", backend=backend, threads=threads),
                 lambda: qk.dequantize(w, "Q4_K", backend=backend, threads=threads),
                 lambda: qk.quantize(x, "Q4_K", backend=backend, threads=threads),
                 lambda: qk.quantize(x, "Q4_K", imatrix=np.ones(512, np.float32), backend=backend, threads=threads)):
        with pytest.raises(ValueError, match=f"threads must be a positive int or None, got {threads!r}"):
            call()


def test_a_kernel_on_two_threads_leaves_the_callers_thread_count_as_it_was_even_when_it_fails():
    """The API sets Numba's thread count for a call and restores it (compiled, not through
    numba.set_num_threads): a caller who set one thread keeps it, after a result and after an error."""
    import numba

    w = _blocks("Q4_K", 4).reshape(4, -1)
    x = np.ones(256, np.float32)
    expected = qk.gemv(w, x, "Q4_K", threads=1)
    numba.set_num_threads(1)
    try:
        assert_bit_identical(expected, qk.gemv(w, x, "Q4_K", threads=2), "Q4_K gemv on two threads")
        assert numba.get_num_threads() == 1
        x[3] = np.inf  # refused inside the parallel kernel (qk.Matrix quantizes x there)
        with pytest.raises(ValueError, match="non-finite values"):
            qk.Matrix(w, "Q4_K")(x, 2)
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dequantize_out_must_match(backend):
    raw = _blocks("Q4_K", 2)  # (2, 144) -> (2, 256)
    with pytest.raises(ValueError, match=r"out has shape \(512,\), the result has shape \(2, 256\)"):
        qk.dequantize(raw, "Q4_K", backend=backend, out=np.empty(512, np.float32))
    with pytest.raises(ValueError, match="out must be a float32 numpy array, got dtype float64"):
        qk.dequantize(raw, "Q4_K", backend=backend, out=np.empty((2, 256)))
    with pytest.raises(ValueError, match="C-contiguous and writeable"):
        qk.dequantize(raw, "Q4_K", backend=backend, out=np.empty((256, 2), np.float32).T)
