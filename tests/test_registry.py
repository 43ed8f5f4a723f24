import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

import quantbench_kernels as qk


def test_registry_lists_the_k_quants_with_gguf_sizes():
    names = {f.name for f in qk.formats()}
    assert {"Q2_K", "Q4_K", "Q8_K"} <= names
    for fmt in qk.formats():
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
