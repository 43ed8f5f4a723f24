"""The activation formats (Q8_K, Q8_0, Q8_1) are quantized as llama.cpp's CPU backend quantizes a
dot product's activations, which on x86 is not always the format's reference quantizer; checked
against llama.cpp's own functions through ggml-python where it is installed."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import quantbench_kernels as qk
from pytest_quantbench import strategies as qst
from pytest_quantbench.bitexact import assert_bit_identical

DOT = [f.name for f in qk.formats("gemv")]
ACTIVATIONS = sorted({qk.get_format(name).activation for name in DOT})
# Where the CPU backend quantizes activations otherwise than the format's reference quantizer.
CPU_ROUNDING = [name for name in ACTIVATIONS if qk.get_format(name).reference.quantize_activation is not None]


def test_every_dot_format_names_one_of_the_activation_formats():
    assert ACTIVATIONS == ["Q8_0", "Q8_1", "Q8_K"]
    assert CPU_ROUNDING == ["Q8_0", "Q8_1"]


@st.composite
def activations(draw: st.DrawFn, name: str) -> np.ndarray:
    """Float rows for an activation format, with the cases where the CPU backend differs: exact
    halves (127 / max = 1 makes x * 127 / max a tie) and magnitudes so small that 127 / max
    overflows to inf."""
    kind = draw(st.sampled_from(["rows", "halves", "tiny"]))
    x = draw(qst.float_rows(name, n_blocks=st.integers(1, 3)))
    if kind == "halves":
        x = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(-254, 255, x.size).astype(np.float32) / 2
        x[::32] = 127  # every block's largest magnitude: 127 / 127 = 1
    elif kind == "tiny":
        x = (x * np.float32(1e-38)).astype(np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


@pytest.mark.parametrize("name", CPU_ROUNDING)
@given(data=st.data())
def test_numba_activation_quantizer_equals_the_reference(name, data):
    x = data.draw(activations(name))
    fmt = qk.get_format(name)
    expected = fmt.reference.quantize_activation(x.reshape(-1, fmt.block_weights))
    assert_bit_identical(expected, fmt.numba.quantize_activation(x.reshape(-1, fmt.block_weights)))


@pytest.mark.parametrize(("first", "second"), [(70, 200), (200, 70), (31, 32), (0, 255)])
def test_q8_k_takes_its_scale_from_the_first_weight_of_largest_magnitude_across_its_32_weight_chunks(first, second):
    # The Numba quantizer finds the extreme 32 weights at a time: a tie of 3 and -3 in two chunks
    # must still give C's first one (the sign of d), and a zero block nothing.
    x = np.linspace(-1, 1, 256, dtype=np.float32)
    x[first], x[second] = 3.0, -3.0
    q8_k = qk.get_format("Q8_K")
    numba_blocks = q8_k.numba.quantize(x.reshape(1, -1))
    assert_bit_identical(q8_k.reference.quantize(x.reshape(1, -1)), numba_blocks)
    vmax = x[min(first, second)]  # C's max: the earlier of 3 and -3; d = 1 / (-127 / max)
    assert numba_blocks[0, :4].view(np.float32)[0] == pytest.approx(-vmax / 127)
    zero = np.zeros((1, 256), np.float32)
    assert_bit_identical(q8_k.reference.quantize(zero), q8_k.numba.quantize(zero))


@pytest.mark.parametrize("name", DOT)
def test_gemv_quantizes_x_as_quantize_activation_says(name):
    rng = np.random.default_rng(1)
    w = qk.quantize((rng.standard_normal((3, 512)) * 0.1).astype(np.float32), name)
    x = rng.standard_normal(512).astype(np.float32)
    act = qk.quantize_activation(x, name)
    fmt = qk.get_format(name)
    assert act.shape == (512 // qk.get_format(fmt.activation).block_weights, qk.get_format(fmt.activation).block_bytes)
    assert_bit_identical(qk.quantize_activation(x, name, backend="reference"), act)
    assert_bit_identical(qk.gemv(w, x, name), fmt.numba.gemv(w.reshape(3, -1, fmt.block_bytes), act, 1))


def test_the_cpu_rounding_differs_from_the_reference_quantizer_on_ties():
    x = np.zeros(32, np.float32)
    x[0], x[1], x[2] = 127, 2.5, -3.5  # 127 / max = 1: the quants are x, rounded
    cpu = qk.quantize_activation(x, "Q4_0").view(np.int8)[0, 2:5]
    ref = qk.quantize(x, "Q8_0").view(np.int8)[0, 2:5]
    assert cpu.tolist() == [127, 2, -4]  # half to even
    assert ref.tolist() == [127, 3, -4]  # roundf: half away from zero


def test_activation_quantization_of_a_format_without_dots_is_refused():
    with pytest.raises(ValueError, match="Q8_K has no dot product, so no activation format"):
        qk.quantize_activation(np.zeros(256, np.float32), "Q8_K")
    with pytest.raises(ValueError, match="not a multiple of the Q8_0 block size"):
        qk.quantize_activation(np.zeros(40, np.float32), "Q4_0")


# ----------------------------------------------------------------------------------------------
# Against llama.cpp's own functions (ggml-python's libggml)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ggml():
    return pytest.importorskip("ggml", reason="ggml-python (llama.cpp's libggml) is not installed")


FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def _llama_cpp(ggml, name: str, x: np.ndarray, reference: bool) -> np.ndarray:
    """llama.cpp's ``quantize_row_*_ref`` (``reference``) or its CPU backend's ``from_float`` of ``name``."""
    ggml.ggml_cpu_init()
    t = getattr(ggml, f"GGML_TYPE_{name}")
    if reference:
        base = ctypes.CDLL(str(Path(ggml.__file__).parent / "lib" / "libggml-base.so"))
        symbol = getattr(base, f"quantize_row_{name.lower().replace('_k', '_K')}_ref")
    else:
        symbol = ggml.ggml_get_type_traits_cpu(t).contents.from_float
    fn = FROM_FLOAT(ctypes.cast(symbol, ctypes.c_void_p).value)
    fmt = qk.get_format(name)
    out = np.zeros((x.size // fmt.block_weights, fmt.block_bytes), np.uint8)
    assert ggml.ggml_type_size(t) == fmt.block_bytes  # Q8_1: llama.cpp's 36 bytes, not gguf-py's 40
    fn(x.ctypes.data, out.ctypes.data, x.size)
    return out


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(data=st.data())
def test_activations_equal_llama_cpp_cpu_backend(name, data, ggml):
    x = data.draw(activations(name))
    fmt = qk.get_format(name)
    ours = (fmt.reference.quantize_activation or fmt.reference.quantize)(x.reshape(-1, fmt.block_weights))
    assert_bit_identical(_llama_cpp(ggml, name, x, reference=False), ours, f"{name} activations")


@pytest.mark.parametrize("name", ACTIVATIONS)
@given(data=st.data())
def test_activation_reference_quantizers_equal_llama_cpp_ref(name, data, ggml):
    x = data.draw(activations(name))
    assert_bit_identical(_llama_cpp(ggml, name, x, reference=True), qk.quantize(x, name, backend="reference"),
                         f"{name} quantize_row_{name.lower()}_ref")
