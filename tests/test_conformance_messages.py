"""The plugin's conformance checks called directly: what a failure message says."""

import numpy as np
import pytest

import quantbench_kernels as qk
from pytest_quantbench import Kernel
from pytest_quantbench.conformance import ConformanceError, check_quantize


def test_a_quantizer_wrong_in_one_byte_is_named_by_block_byte_and_field():
    fmt = qk.get_format("Q4_K")
    x = (np.random.default_rng(0).standard_normal(3 * 256) * 0.02).astype(np.float32)

    def broken(values):
        out = qk.quantize(values, fmt, backend="reference")
        out[1, 20] ^= 0x01  # block 1, byte 20: qs[4]
        return out

    with pytest.raises(ConformanceError) as err:
        check_quantize(Kernel("broken", "Q4_K", "quantize", broken), fmt, x)
    expected = qk.quantize(x, fmt, backend="reference")[1, 20]
    message = str(err.value)
    assert ("kernel 'broken' (Q4_K quantize) is not bit-identical to the reference (quantize_row_q4_K_ref): 1 of 432 "
            "bytes differ") in message
    assert f"first at block 1, byte 20 (qs[4]): expected 0x{expected:02x}, got 0x{expected ^ 1:02x}" in message


def test_a_correct_quantizer_passes():
    fmt = qk.get_format("Q2_K")
    x = (np.random.default_rng(1).standard_normal(512) * 0.02).astype(np.float32)
    check_quantize(Kernel("good", "Q2_K", "quantize", lambda v: qk.quantize(v, fmt)), fmt, x)
