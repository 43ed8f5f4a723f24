"""A downstream repository that registers llama.cpp's own dot kernels (ggml's AVX2 or AVX-512 pick
for this CPU and its FMA-compiled scalar generic ones, through ggml-python): they pass within the
rounding bound with the distance shown, but for any that this build computes wrongly (checked
independently on a plain row), which fail; and the same kernels fed one flipped quant fail naming
the row, the block and the distance."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import quantbench_kernels as qk

pytest.importorskip("ggml", reason="ggml-python (llama.cpp's libggml) is not installed: pip install ggml-python")

pytestmark = pytest.mark.slow  # two pytest runs in processes of their own, 52 kernels each
TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # ggml_kernels, as the downstream conftest imports it

CONFTEST = f"""
import os, sys
import numpy as np
from hypothesis import settings
sys.path.insert(0, {str(TESTS)!r})
import ggml_kernels

# 52 kernels (13 formats): fewer examples each than Hypothesis' 100 keep this test near a minute;
# derandomized: a flipped quant whose drawn activation is tiny stays within the rounding bound,
# so random draws made the failing case flaky (it passed in one full run here).
settings.register_profile("downstream", max_examples=20, deadline=None, derandomize=True)
settings.load_profile("downstream")

def pytest_quantbench_kernels():
    kernels = ggml_kernels.kernels()
    if os.environ.get("FLIP") != "1":
        return kernels
    flipped = []
    for k in kernels:
        if k.op != "gemv" or k.format_name != "Q4_K":
            continue
        def one_flipped_quant(w, x, fn=k.fn):
            w = np.array(w)
            row = min(3, w.shape[0] - 1)
            w[row, 144 * (w.shape[1] // 144 - 1) + 16 + 5] ^= 1  # last block, qs[0]: one weight's quant
            return fn(w, x)
        flipped.append(k.__class__(k.name + "-flipped", "Q4_K", "gemv", one_flipped_quant, threads=1))
    return flipped
"""


@pytest.fixture
def downstream(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    return pytester


def test_llama_cpp_dot_kernels_pass_within_the_bound_but_those_this_build_gets_wrong_fail(downstream, tiny_gguf):
    import ggml_kernels

    wrong = ggml_kernels.wrong_on_a_plain_row()  # gcc 12 on an AVX-VNNI CPU: [("-generic", "Q5_0")]
    result = downstream.runpytest_subprocess("--quantbench", "-k", "conformance", f"--quantbench-gguf={tiny_gguf}",
                                             "-W", "error")
    assert result.ret == (1 if wrong else 0), result.stdout.str()[-3000:]
    # ggml's SIMD dots reorder the float sums: not bit-identical, within the bound, and the
    # summary says by how much.
    result.stdout.fnmatch_lines_random([
        "quantbench: kernels: ggml: Q4_0 gemv, Q4_0 vec_dot, *; ggml-generic: Q4_0 gemv, *",
        "Q4_K*gemv*ggml *(not measured)*within the rounding bound: max * ulps, *% of the allowed error*",
        "Q6_K*vec_dot*ggml-generic *(not measured)*within the rounding bound: max * ulps*",
    ])
    # A kernel that is wrong on a plain row fails here too, and no other does.
    result.stdout.fnmatch_lines_random([f"{fmt}*{op}*ggml{suffix} *(not measured)*FAILED*"
                                        for suffix, fmt in wrong for op in ("gemv", "vec_dot")])
    failed = [line for line in result.stdout.lines if "(not measured)" in line and "FAILED" in line]
    assert len(failed) == 2 * len(wrong), failed
    distances = [line for line in result.stdout.lines if " ggml " in line and "within the rounding bound" in line]
    dot_formats = list(qk.formats("gemv"))
    assert len(distances) == 2 * (len(dot_formats) - sum(suffix == "" for suffix, _ in wrong))
    assert any(" max 0 ulps" not in line for line in distances)


def test_the_same_kernels_with_one_flipped_quant_fail_naming_row_block_and_distance(downstream, monkeypatch):
    monkeypatch.setenv("FLIP", "1")
    result = downstream.runpytest_subprocess("--quantbench", "-k", "conformance")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*kernel 'ggml-flipped' (Q4_K gemv) is not within the rounding bound of the reference: * rows outside it",
        "*first at row *: expected * (0x*), got * (0x*)",
        "*block * of row * fails alone (* ulps, * times its bound *): expected *, got *",
        "*distance: * ulps from the reference's float32, * times the allowed error *",
    ])
    result.stdout.fnmatch_lines(["*Q4_K*gemv*ggml-flipped *FAILED (4 of 4 tests)*"])  # Hypothesis and 3 shapes

