"""The downstream gallery: the kernels real projects register, and the mistakes they make, run as a
downstream project runs them (``pytest --quantbench -W error`` in a process of its own), each with
its verdict asserted: gguf-py's NumPy kernels, a float-activation NumPy gemv (the PyTorch path) in
float32 and float16, llama.cpp's IQ4_NL quantizer through ggml-python where it is installed; and the
mutants (a shape bug, a wrong quant only wide rows reach, a kernel changing its caller's arrays, a
nondeterministic one, a one-level quant flip, a float16 overflow), each failing with a message that
names its fault."""

from __future__ import annotations

import re
from pathlib import Path

import gguf
import mutants
import numpy as np
import pytest

import quantbench_kernels as qk

pytestmark = pytest.mark.slow  # one pytest process, 60-odd kernels on Hypothesis draws and fixed shapes
TESTS = Path(__file__).parent

CONFTEST = f"""
import sys
import gguf
import numpy as np
from hypothesis import settings
import quantbench_kernels as qk
from pytest_quantbench import Kernel

sys.path.insert(0, {str(TESTS)!r})
from mutants import (float_gemv as mv, half_q6_k, halves_x, noisy, wide_rows_wrong, zero_past_1024,
                     zeroes_blocks)
settings.register_profile("gallery", max_examples=30, deadline=None, derandomize=True)
settings.load_profile("gallery")


def gguf_py(name, op):
    qtype = qk.get_format(name).qtype
    if op == "dequantize":
        return lambda raw: gguf.quants.dequantize(raw, qtype)
    return lambda x: gguf.quants.quantize(x.reshape(1, -1), qtype)


def mv_flipped(w, x):
    # One quant level off at the weight whose |x| is nearest the mean |x|, in every row.
    j = int(np.argmin(np.abs(np.abs(x) - np.abs(x).mean())))
    block, within = divmod(j, 256)
    group, r = divmod(within, 64)
    w = np.array(w)
    w[:, block * 144 + 16 + group * 32 + r % 32] ^= 1 if r < 32 else 0x10
    return mv("Q4_K")(w, x)


def ggml_iq4_nl():
    try:
        import ggml_kernels
    except ImportError:
        return []
    fn = ggml_kernels.from_float("IQ4_NL")
    return [Kernel("ggml-ref", "IQ4_NL", "quantize", fn, reference="quantize_row_iq4_nl_ref"),
            Kernel("ggml-undeclared", "IQ4_NL", "quantize", fn)]


def pytest_quantbench_kernels():
    kernels = []
    for f in qk.formats():
        if f.qtype in gguf.quants._type_traits and f.activation is not None:
            kernels.append(Kernel("gguf-py", f.name, "dequantize", gguf_py(f.name, "dequantize")))
            if f.name in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "MXFP4"):  # what gguf-py quantizes
                kernels.append(Kernel("gguf-py", f.name, "quantize", gguf_py(f.name, "quantize")))
    for name in ("Q4_0", "Q8_0", "Q4_K", "Q6_K", "IQ4_NL", "MXFP4"):
        kernels.append(Kernel("numpy-mv", name, "gemv", mv(name), activation="float32"))
        kernels.append(Kernel("numpy-mv-f16", name, "gemv", mv(name, np.float16), activation="float32",
                              precision="float16"))
    return kernels + ggml_iq4_nl() + [
        Kernel("mv-undeclared", "Q4_K", "gemv", mv("Q4_K")),
        Kernel("zero-past-1024", "Q4_0", "gemv", zero_past_1024),
        Kernel("wide-rows-wrong", "Q4_0", "gemv", wide_rows_wrong),
        Kernel("halves-x", "Q4_K", "gemv", halves_x),
        Kernel("halves-x-writable", "Q4_K", "gemv", halves_x, writable_inputs=True),
        Kernel("zeroes-blocks", "Q4_K", "dequantize", zeroes_blocks),
        Kernel("noisy", "Q4_K", "gemv", noisy),
        Kernel("noisy-declared", "Q4_K", "gemv", noisy, deterministic=False),
        Kernel("mv-flipped", "Q4_K", "gemv", mv_flipped, activation="float32"),
        Kernel("half-q6k", "Q6_K", "dequantize", half_q6_k, precision="float16"),
        Kernel("half-q6k-tame", "Q6_K", "dequantize", half_q6_k, precision="float16", extreme_scales=False),
    ]
"""

# Kernel name -> the words its failures must contain (None: it must pass everywhere).
EXPECTED = {
    "gguf-py": None,
    "numpy-mv": None,
    "numpy-mv-f16": None,
    "ggml-ref": None,
    "noisy-declared": None,
    "ggml-undeclared": "(IQ4_NL quantize) is not bit-identical to the reference (quantize_iq4_nl)",
    "mv-undeclared": 'declare activation="float32"',
    "zero-past-1024": "got 0.0 (0x00000000)",
    "wide-rows-wrong": "(Q4_0 gemv) is not within the rounding bound of the reference: 5 of 5 rows outside it",
    "halves-x": "raised ValueError: output array is read-only",
    "halves-x-writable": "changed its input x in place",
    "zeroes-blocks": "read-only",
    "noisy": "gave different results on two calls with the same input",
    "mv-flipped": "is not within the rounding bound of a float32-activation dot of the reference",
    "half-q6k": "float16 overflows on the way",
    # extreme_scales=False spares it Hypothesis' synthetic blocks, not a real file's: it fails on the
    # GGUF file's block of d = 65504 alone.
    "half-q6k-tame": "float16 overflows on the way",
}
ONLY_ON_THE_FILE = {"half-q6k", "half-q6k-tame"}


def _extreme_gguf(path: Path) -> Path:
    """A GGUF file with one Q6_K tensor of two blocks: d = 65504 (float16's largest), sub-scales 2,
    every quant at zero (each weight 0, but d x sc overflows float16), then a model-like block."""
    normal = qk.quantize(np.random.default_rng(0).standard_normal(256).astype(np.float32) * 0.02, "Q6_K")
    raw = np.concatenate([mutants.huge_scale_q6_k_block(), normal.reshape(1, -1)])
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_tensor("blk.0.ffn_down.weight", raw, raw_dtype=gguf.GGMLQuantizationType.Q6_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _verdicts(stdout: str) -> dict[tuple[str, str, str], str]:
    """(kernel, format, op) -> its conformance cell in the summary table."""
    out = {}
    for line in stdout.splitlines():
        m = re.match(r"^(\S+)\s+(dequantize|quantize|gemv)\s+(\S+)\s+\(not measured\)\s+(.*)$", line)
        if m:
            out[(m.group(3), m.group(1), m.group(2))] = m.group(4)
    return out


def _failure_sections(stdout: str) -> dict[str, str]:
    """Test id -> its failure section."""
    parts = re.split(r"^_+ (test_\S+) _+$", stdout, flags=re.M)
    return {parts[i]: re.split(r"^=", parts[i + 1], maxsplit=1, flags=re.M)[0] for i in range(1, len(parts) - 1, 2)}


def test_the_gallery_of_real_kernels_and_mutants_gets_the_verdicts_it_should(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\naddopts = -p no:cacheprovider\n")
    extreme = _extreme_gguf(pytester.path / "extreme.gguf")
    result = pytester.runpytest_subprocess("--quantbench", "-k", "conformance", "-W", "error",
                                           f"--quantbench-gguf={extreme}", timeout=900)
    stdout = result.stdout.str()
    verdicts = _verdicts(stdout)
    sections = _failure_sections(stdout)
    have_ggml = any(name == "ggml-ref" for name, _, _ in verdicts)
    expected_gguf_py = [f.name for f in qk.formats() if f.qtype in gguf.quants._type_traits and f.activation]
    assert {(f, "dequantize") for f in expected_gguf_py} <= {(f, op) for n, f, op in verdicts if n == "gguf-py"}
    for (name, fmt, op), cell in verdicts.items():
        fault = EXPECTED[name]
        if fault is None:
            assert not cell.startswith("FAILED"), (name, fmt, op, cell)
            continue
        assert cell.startswith("FAILED"), (name, fmt, op, cell)
        mine = [text for test_id, text in sections.items() if f"[{name}-{fmt}-{op}" in test_id]
        assert mine and any(fault in text for text in mine), (name, fault, mine[:1])
        if name in ONLY_ON_THE_FILE:
            assert all("test_conformance_gguf" in test_id for test_id in sections if f"[{name}-" in test_id), name
        assert all(len(text.strip().splitlines()) <= 25 for text in mine), mine
    absent = set() if have_ggml else {"ggml-ref", "ggml-undeclared"}
    assert set(EXPECTED) - absent <= {n for n, _, _ in verdicts}
    assert result.ret == 1
    assert "Traceback" not in stdout and "RuntimeWarning" not in stdout
