"""The fixtures the plugin offers downstream tests."""

import gguf
import numpy as np
import pytest

import quantbench_kernels as qk
from pytest_quantbench.bitexact import assert_bit_identical
from quantbench.gguf_files import GGUFFileError, read_tensors


@pytest.mark.parametrize("kind", ["random", "weights", "edge"])
@pytest.mark.parametrize("name", [f.name for f in qk.formats() if f.qtype in gguf.quants._type_traits])
def test_quant_blocks_are_valid_blocks_of_each_kind(quant_blocks, name, kind):
    fmt = qk.get_format(name)
    raw = quant_blocks(name, 12, seed=3, kind=kind)
    assert raw.shape == (12, fmt.block_bytes) and raw.dtype == np.uint8
    assert np.array_equal(raw, quant_blocks(name, 12, seed=3, kind=kind))  # seeded
    values = qk.dequantize(raw, name)
    assert_bit_identical(gguf.quants.dequantize(raw, fmt.qtype), values)
    if kind == "edge" and "d" in fmt.block_dtype.names:
        d = raw.view(fmt.block_dtype)["d"].reshape(-1)
        assert np.isnan(d).any() and np.isinf(d).any() and (d == 0).any()
    elif kind == "edge":  # MXFP4's E8M0 exponent at 0, 255 (2**127: its larger values overflow) and 0
        e = raw.view(fmt.block_dtype)["e"].reshape(-1)
        assert set(e.tolist()) == {0, 255} and np.isinf(values).any() and (values == 0).any()
    else:
        assert np.isfinite(values).all() and values.std() > 0


def test_quant_blocks_refuses_an_unknown_kind(quant_blocks):
    with pytest.raises(ValueError, match="kind must be one of random, weights, edge"):
        quant_blocks("Q4_K", 2, kind="nonsense")


def test_ready_made_blocks(q2_k_blocks, q4_k_blocks):
    assert q2_k_blocks.shape == (64, 84) and q4_k_blocks.shape == (64, 144)
    std = qk.dequantize(q4_k_blocks, "Q4_K").std()
    assert 0.005 < std < 0.05  # weight-like


def test_tiny_gguf_holds_several_formats(tiny_gguf):
    tensors = {t.name: t for t in read_tensors(tiny_gguf)}
    weight_formats = {f.name for f in qk.formats() if f.activation is not None}
    assert {t.qtype.name for t in tensors.values()} == weight_formats | {"TQ2_0", "F16", "F32"}
    out = tensors["blk.0.attn_output.weight"]
    assert out.shape == (8, 512) and out.raw.shape == (8, 2 * 144)
    w = qk.dequantize(out.raw, "Q4_K")
    assert w.shape == (8, 512) and np.isfinite(w).all() and 0.005 < w.std() < 0.05


def test_gguf_tensors_skips_without_files(pytester):
    pytester.makepyfile("def test_it(gguf_tensors):\n    list(gguf_tensors)\n")
    result = pytester.runpytest("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no GGUF files given: pass --quantbench-gguf=PATH*"])


def test_gguf_tensors_iterates_the_given_files(pytester, tiny_gguf):
    pytester.makepyfile("""
def test_it(gguf_tensors):
    got = {name: (qtype.name, shape, raw.shape) for name, qtype, shape, raw in gguf_tensors}
    assert got["blk.0.ffn_down.weight"] == ("Q2_K", (4, 768), (4, 252))
    assert got["blk.1.attn_q.weight"] == ("Q5_0", (8, 160), (8, 110))
    assert len(got) == 18
""")
    pytester.runpytest(f"--quantbench-gguf={tiny_gguf}", "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_bad_gguf_files_are_named_clearly(tmp_path, tiny_gguf):
    with pytest.raises(GGUFFileError, match="cannot be read"):
        read_tensors(tmp_path / "absent.gguf")
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(GGUFFileError, match="is not a GGUF file"):
        read_tensors(not_gguf)
    data = tiny_gguf.read_bytes()
    for cut in (40, len(data) // 2, len(data) - 100):
        truncated = tmp_path / f"cut{cut}.gguf"
        truncated.write_bytes(data[:cut])
        with pytest.raises(GGUFFileError, match="truncated or corrupt"):
            read_tensors(truncated)


def test_the_committed_gguf_fixture_is_what_the_writer_makes(tmp_path):
    from pathlib import Path

    from pytest_quantbench.fixtures import write_tiny_gguf

    committed = Path(__file__).resolve().parent / "data" / "tiny.gguf"
    assert write_tiny_gguf(tmp_path / "again.gguf").read_bytes() == committed.read_bytes()
    tensors = read_tensors(committed)
    kquants = [t for t in tensors if t.qtype.name.endswith("_K")]
    assert len(kquants) == 6
    for t in kquants:
        assert_bit_identical(gguf.quants.dequantize(t.raw, t.qtype), qk.dequantize(t.raw, t.qtype))
