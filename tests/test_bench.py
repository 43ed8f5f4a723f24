"""``quantbench bench``: the decode step of a GGUF file (every matrix one token multiplies, through
gemv), timed, with its totals by format and by kind; and what it says about files it cannot run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gguf
import numpy as np
import pytest

import quantbench_kernels as qk
from pytest_quantbench.strategies import weight_like
from quantbench import decode_step, llamacpp
from quantbench.cli import main
from quantbench.gguf_files import GGUFFileError

TINY = Path(__file__).parent / "data" / "tiny.gguf"


def _model(path: Path, tied: bool = True) -> Path:
    """A two-layer model: Q4_0, Q5_0 and Q4_K matrices (rows of 64 and 256), an F16 one, a norm,
    and a Q8_0 token_embd that is the output head unless ``tied`` is False."""
    rng = np.random.default_rng(1)
    writer = gguf.GGUFWriter(path, arch="llama")
    for name, qtype, rows, cols in [("blk.0.attn_q.weight", "Q4_0", 8, 64), ("blk.0.ffn_down.weight", "Q4_K", 4, 256),
                                    ("blk.1.attn_q.weight", "Q5_0", 8, 64), ("token_embd.weight", "Q8_0", 32, 64)]:
        raw = qk.quantize(weight_like(rng, (rows, cols)), qtype)
        writer.add_tensor(name, raw, raw_dtype=qk.get_format(qtype).qtype)
    writer.add_tensor("blk.1.ffn_up.weight", weight_like(rng, (4, 64)).astype(np.float16))
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, np.float32))
    if not tied:
        writer.add_tensor("output.weight", weight_like(rng, (16, 64)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_the_decode_step_is_every_matrix_and_the_tied_head(tmp_path):
    step = decode_step.decode_step(_model(tmp_path / "m.gguf"))
    assert [(m.tensor.name, m.kind, m.type_name) for m in step] == [
        ("blk.0.attn_q.weight", "attn_q", "Q4_0"), ("blk.0.ffn_down.weight", "ffn_down", "Q4_K"),
        ("blk.1.attn_q.weight", "attn_q", "Q5_0"), ("token_embd.weight", "output (tied token_embd)", "Q8_0"),
        ("blk.1.ffn_up.weight", "ffn_up", "F16")]
    untied = decode_step.decode_step(_model(tmp_path / "u.gguf", tied=False))
    assert [m.kind for m in untied if "output" in m.kind] == ["output"]  # token_embd is then a lookup, not a matmul


def test_each_matrix_is_multiplied_as_gemv_would(tmp_path):
    step = decode_step.decode_step(_model(tmp_path / "m.gguf"))
    xs = decode_step.activations(step)
    for m in step:
        x = xs[m.tensor.shape[1]]
        got = m(x, 1)
        if m.fmt is not None:
            np.testing.assert_array_equal(got, qk.gemv(m.tensor.raw, x, m.fmt, threads=1))
        else:
            w = gguf.quants.dequantize(np.asarray(m.tensor.raw), m.tensor.qtype).astype(np.float32)
            np.testing.assert_array_equal(got, w @ x)


def test_bench_reports_time_per_token_by_type_and_kind(tmp_path, capsys):
    path = _model(tmp_path / "m.gguf")
    assert main(["bench", str(path), "--threads", "1", "2", "auto", "--repeats", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["threads"] for r in data["results"]] == [1, 2, "auto"]
    assert isinstance(data["slower_than_one_thread"], list)
    for r in data["results"]:
        assert len(r["token_ms"]) == 3 and min(r["token_ms"]) > 0 and r["iqr_over_median"] >= 0
        assert r["matrices"] == 5 and r["weights"] == 8 * 64 + 4 * 256 + 8 * 64 + 32 * 64 + 4 * 64
        assert r["ms_per_token"] > 0 and r["tokens_per_s_bound"] == pytest.approx(1e3 / r["ms_per_token"])
        assert set(r["by_type"]) == {"Q4_0", "Q4_K", "Q5_0", "Q8_0", "F16"}
        assert sum(g["share"] for g in r["by_kind"].values()) == pytest.approx(1)
        assert r["by_kind"]["attn_q"]["weights"] == 2 * 8 * 64
    assert main(["bench", str(path), "--threads", "1", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "decode step = 5 matrices" in out and "ms per token" in out and "output (tied token_embd)" in out
    assert re.search(r"1 thread\(s\): [0-9.]+ ms per token .* spread [0-9.]+-[0-9.]+ ms, IQR [0-9.]+% of the "
                     r"median", out)


def test_two_threads_slower_than_one_are_flagged_and_faster_ones_are_not():
    def result(threads, ms):
        return {"threads": threads, "ms_per_token": ms}

    quiet = [result(1, 21.0), result(2, 12.0), result("auto", 12.5)]
    assert decode_step.slower_than_one_thread(quiet) == []
    busy = [result(1, 21.0), result(2, 845.2), result("auto", 22.0)]
    (line, auto) = decode_step.slower_than_one_thread(busy)
    assert line.startswith("2 threads took 845.20 ms per token, more than 1 thread's 21.00: another process")
    assert auto.startswith("auto threads took 22.00 ms")
    assert decode_step.slower_than_one_thread([result(2, 845.2)]) == []  # nothing to compare with


def test_bench_prints_the_flag_under_its_results(tmp_path, capsys, monkeypatch):
    path = _model(tmp_path / "m.gguf")
    monkeypatch.setattr(decode_step, "slower_than_one_thread", lambda results: ["2 threads took ages"])
    assert main(["bench", str(path), "--threads", "1", "2", "--repeats", "1"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("note: 2 threads took ages")


def test_bench_refuses_a_thread_count_that_is_neither_a_number_nor_auto(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", str(tmp_path / "m.gguf"), "--threads", "most"])
    assert exit_.value.code == 2 and "most" in capsys.readouterr().err


@pytest.mark.skipif(llamacpp.unavailable_reason() is not None, reason=str(llamacpp.unavailable_reason()))
def test_llamacpps_step_multiplies_the_same_matrices(tmp_path):
    step = decode_step.decode_step(_model(tmp_path / "m.gguf"))
    xs = decode_step.activations(step)
    for m, theirs in zip(step, decode_step.llamacpp_step(step), strict=True):
        x = xs[m.tensor.shape[1]]
        ours = m(x, 1)
        # Their SIMD dots add in another order than C's scalar loop, which ours follow.
        np.testing.assert_allclose(theirs(x, 1), ours, rtol=1e-4, atol=1e-4 * float(np.abs(ours).max()))
        np.testing.assert_array_equal(theirs(x, 2), theirs(x, 1))


@pytest.mark.skipif(llamacpp.unavailable_reason() is not None, reason=str(llamacpp.unavailable_reason()))
def test_bench_with_llamacpp_puts_its_kernels_beside_ours_token_by_token(tmp_path, capsys):
    path = _model(tmp_path / "m.gguf")
    assert main(["bench", str(path), "--threads", "1", "2", "--repeats", "3", "--json", "--llamacpp"]) == 0
    for r in json.loads(capsys.readouterr().out)["results"]:
        theirs = r["llamacpp"]
        assert r["x_llamacpp"] == pytest.approx(theirs["ms_per_token"] / r["ms_per_token"])
        assert theirs["tokens_per_s_bound"] == pytest.approx(1e3 / theirs["ms_per_token"])
        assert set(theirs["by_type"]) == set(r["by_type"]) and set(theirs["by_kind"]) == set(r["by_kind"])
        assert sum(g["ms"] for g in theirs["by_type"].values()) == pytest.approx(theirs["ms_per_token"])
    assert main(["bench", str(path), "--threads", "1", "--repeats", "1", "--llamacpp"]) == 0
    out = capsys.readouterr().out
    assert "llama.cpp's kernels, tokens interleaved with these" in out and "x llama" in out


def test_bench_with_llamacpp_says_what_is_missing_in_one_line(tmp_path, capsys, monkeypatch):
    path = _model(tmp_path / "m.gguf")
    monkeypatch.setattr(llamacpp, "unavailable_reason", lambda: "ggml-python (llama.cpp's libggml) is not installed")
    assert main(["bench", str(path), "--llamacpp"]) == 2
    err = capsys.readouterr().err
    assert "ggml-python (llama.cpp's libggml) is not installed" in err and err.count("\n") == 1
    monkeypatch.setattr(llamacpp, "unavailable_reason", lambda: None)
    monkeypatch.setattr(llamacpp, "kernels", lambda name: llamacpp.LlamaCpp(name, None, None, None, None))
    assert main(["bench", str(path), "--llamacpp"]) == 2
    err = capsys.readouterr().err
    assert "llama.cpp has no dot product of Q4_0 (tensor 'blk.0.attn_q.weight')" in err and err.count("\n") == 1


def test_bench_names_the_formats_it_cannot_multiply_and_exits_2(capsys):
    assert main(["bench", str(TINY)]) == 2
    err = capsys.readouterr().err
    assert "without a gemv here (TQ2_0)" in err and "blk.1.ffn_up_exps.weight" in err


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "cannot be read"),
    (lambda p: (p.write_bytes(b"GGML" + bytes(60)), p)[1], "is not a GGUF file"),
])
def test_bench_on_a_bad_file_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    path = make(tmp_path / "bad.gguf")
    assert main(["bench", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_file_without_matrices_is_refused(tmp_path):
    path = tmp_path / "norms.gguf"
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GGUFFileError, match="has no blk.N.*weight matrices and no output head"):
        decode_step.decode_step(path)


@pytest.mark.parametrize("option", [["--threads", "0"], ["--repeats", "-1"], ["--threads", "two"]])
def test_bad_option_values_are_usage_errors(option, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", str(tmp_path / "m.gguf"), *option])
    assert exit_.value.code == 2
    assert "expected a positive whole number" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["bench", "m.gguf"], ["requantize", "a.gguf", "b.gguf", "--policy", "all-Q4_K"],
                                     ["generate", "m.gguf", "--prompt", "x"], ["compare-policies", "m.gguf"]])
def test_more_threads_than_the_pool_holds_is_a_usage_error_naming_the_pool(command, capsys):
    import numba

    pool = numba.config.NUMBA_NUM_THREADS
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--threads", str(pool + 1)])
    assert exit_.value.code == 2
    assert f"at most {pool} threads here (Numba's pool), got '{pool + 1}'" in capsys.readouterr().err


def test_version_prints_the_installed_packages_version(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"quantbench {version('pytest-quantbench')}"
