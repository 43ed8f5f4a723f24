import dataclasses

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

import quantbench_kernels as qk
from quantbench_kernels import registry
from quantbench_kernels.registry import GGML_SIZES_NOT_IN_GGUF_PY


def test_q8_1_has_llama_cpp_s_layout_where_gguf_py_lists_the_old_one():
    assert GGML_QUANT_SIZES[GGMLQuantizationType.Q8_1] == (32, 40)  # f32 d and s: before 2024
    fmt = qk.get_format("Q8_1")
    assert (fmt.block_weights, fmt.block_bytes) == (32, 36) and fmt.block_dtype.names == ("d", "s", "qs")
    ggml = pytest.importorskip("ggml", reason="ggml-python (llama.cpp's libggml) is not installed")
    assert ggml.ggml_type_size(ggml.GGML_TYPE_Q8_1) == 36


def test_registry_lists_the_formats_with_gguf_sizes():
    names = {f.name for f in qk.formats()}
    assert {"Q2_K", "Q4_K", "Q8_K", "Q4_0", "Q8_0", "Q8_1", "IQ4_NL", "IQ4_XS", "MXFP4"} <= names
    for fmt in qk.formats():
        if fmt.qtype not in GGML_SIZES_NOT_IN_GGUF_PY:
            assert (fmt.block_weights, fmt.block_bytes) == GGML_QUANT_SIZES[fmt.qtype]
        assert fmt.block_dtype.itemsize == fmt.block_bytes
    assert qk.get_format("Q4_K").bits_per_weight == 4.5
    assert qk.get_format("Q2_K").bits_per_weight == 2.625


@pytest.mark.parametrize("key", ["Q4_K", "q4_k", GGMLQuantizationType.Q4_K])
def test_get_format_accepts_names_and_enum(key):
    assert qk.get_format(key).qtype == GGMLQuantizationType.Q4_K


@pytest.mark.parametrize("key", ["Q9_K", GGMLQuantizationType.IQ2_XXS, 12])
def test_unknown_qtype_is_refused_with_the_known_ones_listed(key):
    with pytest.raises(ValueError, match="qtype") as err:
        qk.get_format(key)
    if not isinstance(key, int):
        assert "Q4_K" in str(err.value)


def test_dot_formats_name_a_registered_activation_format():
    for fmt in qk.formats():
        if fmt.reference.gemv is not None:
            act = qk.get_format(fmt.activation)
            assert act.reference.quantize is not None and act.numba.quantize is not None


def test_supports_knows_the_registry_ops_and_refuses_others():
    assert qk.get_format("Q4_K").supports("gemv")
    assert not qk.get_format("Q8_K").supports("gemv")
    with pytest.raises(ValueError, match="unknown op 'vec_dot'.*dequantize, quantize, gemv"):
        qk.get_format("Q4_K").supports("vec_dot")


def test_a_format_whose_dtype_disagrees_with_gguf_is_refused():
    with pytest.raises(TypeError, match="GGML_QUANT_SIZES"):
        qk.BlockFormat(
            name="BAD",
            qtype=GGMLQuantizationType.Q4_K,
            block_dtype=np.dtype([("d", "<f2")]),
            reference=qk.Ops(),
            numba=qk.Ops(),
        )


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        qk.register(qk.get_format("Q4_K"))


def test_a_format_registered_anew_under_its_name_gets_its_own_gemv(monkeypatch):
    """qk.gemv looks a format's kernels up once per name: a format that replaces the registered one
    (a module imported again, as pytester does) must not be served the old one's gemv."""
    old = qk.get_format("Q4_K")
    w = qk.quantize(np.ones((2, 256), np.float32), old)
    x = np.ones(256, np.float32)
    qk.gemv(w, x, "Q4_K")  # the old format's kernels, looked up and kept
    calls = []

    def gemv(w, act, threads=None):
        calls.append(w.shape)
        return old.numba.gemv(w, act, threads)

    new = dataclasses.replace(old, numba=dataclasses.replace(old.numba, gemv=gemv))
    monkeypatch.setitem(registry._FORMATS, "Q4_K", new)
    np.testing.assert_array_equal(qk.gemv(w, x, "Q4_K"), qk.gemv(w, x, old))
    assert calls == [(2, 1, 144)]
