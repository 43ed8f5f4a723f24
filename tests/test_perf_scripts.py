"""The command lines of the scripts in tests/perf: a bad value is a usage error that names it."""

import importlib.util
from pathlib import Path

import pytest

PERF = Path(__file__).parent / "perf"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, PERF / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("argv", "message"), [
    (["--rounds", "0"], "--rounds must be at least 1"),
    (["--threads", "-1"], "--threads and --rounds must be at least 1"),
    (["--shape", "256by4096"], "--shape must be ROWSxCOLS"),
    (["--shape", "0x4096"], "--shape must be ROWSxCOLS"),
    (["--formats", "Q4_K,Q9_Z"], "unknown or unsupported qtype 'Q9_Z'"),
    (["--formats", "Q8_K"], "Q8_K has no gemv"),
    (["--shape", "16x640", "--formats", "Q5_0,Q4_K"], "rows of 640 weights are not whole Q4_K blocks"),
])
def test_gemv_vs_llama_cpp_refuses_a_bad_option_naming_it(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        _script("gemv_vs_llama_cpp").parse_arguments(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_gemv_vs_llama_cpp_takes_good_options_as_given():
    args, rows, cols, names = _script("gemv_vs_llama_cpp").parse_arguments(
        ["--shape", "2048X640", "--formats", "q5_0,Q8_0", "--threads", "2", "--each"])
    assert (rows, cols, names, args.threads, args.each) == (2048, 640, ["Q5_0", "Q8_0"], 2, True)
