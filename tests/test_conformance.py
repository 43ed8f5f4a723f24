"""Numba kernels equal the NumPy reference bit for bit, and the reference equals gguf-py and llama.cpp."""

import gguf
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import quantbench_kernels as qk
from pytest_quantbench import strategies as qst
from pytest_quantbench.bitexact import assert_bit_identical

ALL = [f.name for f in qk.formats()]
DOT = [f.name for f in qk.formats("gemv")]
# The formats that hold weights (they have dot products); Q8_K and Q8_1 only ever hold activations,
# and libgguf (llama.cpp's ggml_quantize_chunk) quantizes weight formats only.
WEIGHTS = [f.name for f in qk.formats() if f.activation is not None]
GGUF_PY = [f.name for f in qk.formats() if f.qtype in gguf.quants._type_traits]


@pytest.mark.parametrize("name", ALL)
@given(data=st.data())
def test_dequantize_numba_equals_reference(name, data):
    raw = data.draw(qst.blocks(name, n_blocks=st.integers(1, 4)))
    assert_bit_identical(qk.dequantize(raw, name, backend="reference"), qk.dequantize(raw, name))


@pytest.mark.parametrize("name", GGUF_PY)
@given(data=st.data())
def test_dequantize_reference_equals_gguf_py(name, data):
    raw = data.draw(qst.blocks(name, n_blocks=st.integers(1, 4)))
    expected = gguf.quants.dequantize(raw, qk.get_format(name).qtype)
    assert_bit_identical(expected, qk.dequantize(raw, name, backend="reference"))


@pytest.mark.parametrize("name", ALL)
@given(data=st.data())
def test_quantize_numba_equals_reference(name, data):
    x = data.draw(qst.float_rows(name, n_blocks=st.integers(1, 3)))
    assert_bit_identical(qk.quantize(x, name, backend="reference"), qk.quantize(x, name), "quantized bytes")


@pytest.mark.parametrize("name", WEIGHTS)
@given(data=st.data())
def test_quantize_reference_equals_llama_cpp(name, data, libgguf):
    x = data.draw(qst.float_rows(name, n_blocks=st.integers(1, 3)))
    expected = libgguf.quantize_rows(x.reshape(1, -1), int(qk.get_format(name).qtype)).reshape(-1)
    assert_bit_identical(expected, qk.quantize(x, name, backend="reference").reshape(-1), "quantized bytes")


@pytest.mark.slow  # the reference quantizer on 16 x 1024 weights takes seconds per k-quant
@pytest.mark.parametrize("name", WEIGHTS)
@pytest.mark.parametrize("seed", range(3))
def test_quantize_equals_llama_cpp_on_whole_weight_matrices(name, seed, libgguf):
    rng = np.random.default_rng(seed)
    w = (rng.standard_t(4, size=(16, 1024)) * 0.02).astype(np.float32)
    w[seed, :7] = 0  # a partly zero sub-block
    expected = libgguf.quantize_rows(w, int(qk.get_format(name).qtype))
    assert_bit_identical(expected, qk.quantize(w, name, backend="reference"), "reference")
    assert_bit_identical(expected, qk.quantize(w, name, threads=1), "Numba, 1 thread")
    assert_bit_identical(expected, qk.quantize(w, name, threads=2), "Numba, 2 threads")


@pytest.mark.parametrize("name", DOT)
@given(data=st.data())
def test_gemv_numba_equals_reference(name, data):
    nb = data.draw(st.integers(1, 3))
    rows = data.draw(st.integers(1, 3))
    w = data.draw(qst.blocks(name, n_blocks=rows * nb)).reshape(rows, -1)
    x = data.draw(qst.float_rows(qk.get_format(name).activation, n_blocks=nb))
    assert_bit_identical(qk.gemv(w, x, name, backend="reference"), qk.gemv(w, x, name, threads=1))
    assert_bit_identical(qk.gemv(w, x, name, backend="reference"), qk.gemv(w, x, name, threads=2))


@pytest.mark.parametrize("name", DOT)
@given(data=st.data())
def test_vec_dot_numba_equals_reference(name, data):
    nb = data.draw(st.integers(1, 4))
    w = data.draw(qst.blocks(name, n_blocks=nb))
    x = data.draw(qst.float_rows(qk.get_format(name).activation, n_blocks=nb))
    expected = qk.vec_dot(w, x, name, backend="reference")
    got = qk.vec_dot(w, x, name)
    assert isinstance(got, float)
    assert_bit_identical(np.float32([expected]), np.float32([got]), "vec_dot")


@pytest.mark.parametrize("name", DOT)
def test_gemv_is_one_vec_dot_per_row_on_real_sized_rows(name):
    rng = np.random.default_rng(7)
    w = qk.quantize((rng.standard_normal((8, 4096)) * 0.02).astype(np.float32), name)
    x = rng.standard_normal(4096).astype(np.float32)
    rows = np.float32([qk.vec_dot(w[r], x, name) for r in range(8)])
    for backend in qk.BACKENDS:
        assert_bit_identical(rows, qk.gemv(w, x, name, backend=backend), f"{backend} gemv")


@pytest.mark.parametrize("name", ALL)
def test_parallel_kernels_equal_serial_on_large_inputs(name):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((64, 4096)) * 0.02).astype(np.float32)
    q1 = qk.quantize(x, name, threads=1)
    assert_bit_identical(q1, qk.quantize(x, name), "quantize, threads=None")  # above the parallel threshold
    assert_bit_identical(qk.dequantize(q1, name, threads=1), qk.dequantize(q1, name, threads=2))


@pytest.mark.parametrize("name", ALL)
def test_result_shapes_follow_the_input(name):
    fmt = qk.get_format(name)
    blocks = 512 // fmt.block_weights  # per row
    x = np.linspace(-1, 1, 3 * 512, dtype=np.float32).reshape(3, 512)
    rows = qk.quantize(x, name)
    assert rows.shape == (3, blocks * fmt.block_bytes) and rows.dtype == np.uint8
    flat = qk.quantize(x.reshape(-1), name)
    assert flat.shape == (3 * blocks, fmt.block_bytes)
    assert_bit_identical(rows, flat.reshape(3, -1))
    assert qk.dequantize(rows, name).shape == (3, 512)
    assert qk.dequantize(flat, name).shape == (3 * blocks, fmt.block_weights)
    deq = qk.dequantize(rows.reshape(-1), name)
    assert deq.shape == (1536,) and deq.dtype == np.float32
    assert_bit_identical(deq.reshape(3, 512), qk.dequantize(rows, name))


@pytest.mark.parametrize("name", ALL)
def test_non_contiguous_input_is_handled_correctly(name):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4, 1024)) * 0.1).astype(np.float32)
    strided = x[::2, :]
    assert not strided.flags.c_contiguous
    q = qk.quantize(strided, name)
    assert_bit_identical(qk.quantize(np.ascontiguousarray(strided), name), q)
    wide = np.zeros((q.shape[0], 2 * q.shape[1]), dtype=np.uint8)
    wide[:, ::2] = q
    assert_bit_identical(qk.dequantize(q, name), qk.dequantize(wide[:, ::2], name))
    fortran = np.asfortranarray(q)
    assert_bit_identical(qk.dequantize(q, name), qk.dequantize(fortran, name))
    if qk.get_format(name).supports("gemv"):
        v = rng.standard_normal(2048).astype(np.float32)
        assert_bit_identical(qk.gemv(q, v[::2].copy(), name), qk.gemv(q, v[::2], name))


def test_bytes_objects_are_accepted_as_1d_raw():
    q = qk.quantize(np.linspace(-1, 1, 256, dtype=np.float32), "Q4_K")
    assert_bit_identical(qk.dequantize(q.reshape(-1), "Q4_K"), qk.dequantize(q.tobytes(), "Q4_K"))


def _extreme_rows() -> dict[str, np.ndarray]:
    z = np.zeros(256, dtype=np.float32)
    span = z.copy()
    span[-2:] = [3.4028235e38, -1.0141205e31]  # max - min overflows to inf: x / 0 inside the fit
    alternating = np.where(np.arange(256) % 2, np.float32(3.4e38), np.float32(-3.4e38)).astype(np.float32)
    subnormal = (np.arange(256, dtype=np.float32) - 128) * np.float32(1e-44)
    one_value = z.copy()
    one_value[100] = -2.5
    return {"span-overflow": span, "alternating-max": alternating, "subnormal": subnormal, "one-value": one_value}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", sorted(_extreme_rows()))
def test_quantize_extreme_rows_agree_everywhere(name, case, request):
    x = _extreme_rows()[case]
    expected = qk.quantize(x, name, backend="reference")
    assert_bit_identical(expected, qk.quantize(x, name))
    if name in WEIGHTS:
        libgguf = request.getfixturevalue("libgguf")
        llama = libgguf.quantize_rows(x.reshape(1, -1), int(qk.get_format(name).qtype))
        assert_bit_identical(llama.reshape(-1), expected.reshape(-1), "reference vs llama.cpp")


@pytest.mark.parametrize("backend", qk.BACKENDS)
@pytest.mark.parametrize("name", ALL)
def test_dequantize_into_a_caller_buffer(name, backend):
    q = qk.quantize(np.linspace(-2, 2, 2 * 512, dtype=np.float32).reshape(2, 512), name)
    out = np.full((2, 512), np.nan, dtype=np.float32)
    result = qk.dequantize(q, name, backend=backend, out=out)
    assert result is out
    assert_bit_identical(qk.dequantize(q, name, backend=backend), out)
