"""The command lines of the scripts in tests/perf: a bad value is a usage error that names it."""

import importlib.util
import sys
from pathlib import Path

import pytest

PERF = Path(__file__).parent / "perf"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _refused(script: str, argv: list[str], capsys) -> str:
    """What the script's parse_arguments printed when it refused ``argv`` with a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        _script(script).parse_arguments(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["--rounds", "0"], "argument --rounds: expected a positive whole number, got '0'"),
    (["--threads", "-1"], "argument --threads: expected a positive whole number, got '-1'"),
    (["--threads", "100000"], "argument --threads: at most"),
    (["--shape", "256by4096"], "--shape must be ROWSxCOLS"),
    (["--shape", "0x4096"], "--shape must be ROWSxCOLS"),
    (["--formats", "Q4_K,Q9_Z"], "unknown or unsupported qtype 'Q9_Z'"),
    (["--formats", "Q8_K"], "Q8_K is an activation format"),
    (["--shape", "16x640", "--formats", "Q5_0,Q4_K"], "rows of 640 weights are not whole Q4_K blocks"),
])
def test_gemv_vs_llama_cpp_refuses_a_bad_option_naming_it(argv, message, capsys):
    assert message in _refused("gemv_vs_llama_cpp", argv, capsys)


def test_gemv_vs_llama_cpp_takes_good_options_as_given():
    args, rows, cols, names = _script("gemv_vs_llama_cpp").parse_arguments(
        ["--shape", "2048X640", "--formats", "q5_0,Q8_0", "--threads", "2", "--each"])
    assert (rows, cols, names, args.threads, args.each) == (2048, 640, ["Q5_0", "Q8_0"], 2, True)


@pytest.mark.parametrize(("argv", "message"), [
    (["--rounds", "0"], "argument --rounds: expected a positive whole number, got '0'"),
    (["--calls", "many"], "argument --calls: expected a positive whole number, got 'many'"),
])
def test_fixed_cost_refuses_a_bad_option_naming_it(argv, message, capsys):
    assert message in _refused("fixed_cost", argv, capsys)


@pytest.mark.parametrize(("argv", "message"), [
    (["--rounds", "-3"], "argument --rounds: expected a positive whole number, got '-3'"),
    (["--threads", "1,0"], "--threads: expected a positive whole number, got '0'"),
    (["--threads", "1,100000"], "--threads: at most"),
    (["--formats", "Q4_K,Q9_Z"], "unknown or unsupported qtype 'Q9_Z'"),
    (["--formats", "Q8_K"], "Q8_K is an activation format"),
])
def test_stream_stores_refuses_a_bad_option_naming_it(argv, message, capsys):
    assert message in _refused("stream_stores", argv, capsys)


def test_stream_stores_takes_good_options_as_given():
    _, names, threads = _script("stream_stores").parse_arguments(["--formats", "q6_k,IQ4_XS", "--threads", "1"])
    assert (names, threads) == (["Q6_K", "IQ4_XS"], [1])


@pytest.mark.parametrize(("argv", "model_exists", "message"), [
    (["--rounds", "0"], True, "--threads and --rounds must be at least 1"),
    (["--threads", "2", "0"], True, "--threads and --rounds must be at least 1"),
    (["--tokens", "4"], True, "--tokens must be more than the 4 warm-up tokens, got 4"),
    ([], False, "model.gguf: no such file"),
    (["--llama-python", "/nonexistent/python"], True, "--llama-python /nonexistent/python: no such file"),
])
def test_decode_vs_llama_cpp_refuses_a_bad_option_naming_it(argv, model_exists, message, capsys, tmp_path):
    model = tmp_path / "model.gguf"
    if model_exists:
        model.write_bytes(b"GGUF")
    assert message in _refused("decode_vs_llama_cpp", [str(model), "--llama-python", sys.executable, *argv], capsys)
