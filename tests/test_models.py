"""Real model files from PyPI (the ``[models]`` extra; skipped with the reason without it):
whole-file conformance on Gemma 3 270M Q4_K_M."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # a pytest run in a process of its own over a 253 MB model


def test_every_quantized_tensor_of_gemma_is_checked(pytester, gemma_path):
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    result = pytester.runpytest_subprocess("--quantbench", f"--quantbench-gguf={gemma_path}", "-k",
                                           "gguf and (dequantize or gemv)", "-W", "error")
    # 10 Q8_0, 81 Q5_0, 27 Q4_K and 9 Q6_K tensors, two ops each, by the built-ins (no kernels
    # registered); the 640-weight rows of the 32-weight formats included.
    result.assert_outcomes(passed=2 * (10 + 81 + 27 + 9))
    result.stdout.fnmatch_lines_random([
        "Q4_K*dequantize*quantbench-numba*bit-identical (23592960 values, 27 tests)",
        "Q6_K*gemv*quantbench-numba*bit-identical (5760 values, 9 tests)",
        "Q5_0*dequantize*quantbench-numba*bit-identical (63406080 values, 81 tests)",
        "Q8_0*gemv*quantbench-numba*bit-identical (*values, 10 tests)",
    ])
    assert "not checked" not in result.stdout.str()
