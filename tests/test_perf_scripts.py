"""The command lines of the scripts in tests/perf: a bad value is a usage error that names it."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from pytest_quantbench import storage
from pytest_quantbench.findings import Measurement

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


def _stored_run(compute_ms: list[float], kernel_ms: list[float]) -> dict:
    """A stored run (storage.snapshot) of one gemv kernel whose rounds ran between the compute
    and memory probe calls given (the memory probe at 1 ms throughout)."""
    info = {"impl": "timed", "format": "Q4_0", "op": "gemv", "size": "16M", "pass": 0, "weights": 1 << 24,
            "bytes": 9 << 21, "threads": 1}
    paired = {"compute": [t / 1e3 for t in compute_ms], "memory": [1e-3] * len(compute_ms)}
    return storage.snapshot([Measurement(info, [t / 1e3 for t in kernel_ms], paired=paired)])


def test_the_calibration_analysis_scores_fast_state_rounds_and_counts_runs_without_them(tmp_path):
    """analyse.py's fast-state table: rounds whose compute-probe calls are near the quietest count,
    slow-state rounds do not, and a run that never leaves the slow state is counted apart."""
    stored = tmp_path / ".quantbench"
    stored.mkdir()
    # The fast state: compute probe 1 ms, kernel 2 ms; the slow one: 1.5 ms and 3.6 ms (slower
    # than the probe's factor: divided by it, the slow rounds would read 20 % slow).
    mixed_compute = [1.0, 1.0, 1.5, 1.5] * 10 + [1.0]
    base = _stored_run(mixed_compute, [2.0, 3.6, 3.6, 2.0] * 10)
    base["runs"] = base["runs"] * 3
    # Unchanged code, the first 6 of its 40 rounds in the fast state: over all rounds its index
    # would read 1.2 (the slow rounds are most of them), over the fast ones 1.0.
    cases = {"run_0_1": ([1.0] * 7 + [1.5] * 34, [2.0] * 6 + [3.6] * 34),
             "run_0.10_1": ([1.0] * 41, [2.2] * 40),                            # 10 % slower
             "run_0.05_1": ([1.5] * 41, [3.6] * 40)}                            # never in the fast state
    for name, snap in [("base", base)] + [(n, _stored_run(*c)) for n, c in cases.items()]:
        (stored / f"{name}.json").write_text(json.dumps(snap))
        storage.load(stored / f"{name}.json")  # a valid stored file
    table = "\n".join(_script("gate_calibration/analyse").fast_state_table(tmp_path))
    assert "| unchanged | gemv | 0 of 1 | 1.000 - 1.000 | 0 |" in table
    assert "| 10% slower | gemv | 1 of 1 | 1.100 - 1.100 | 0 |" in table
    assert "| 5% slower | gemv | 0 of 0 | - | 1 |" in table


def test_the_calibration_analysis_counts_a_run_stored_without_probes_apart(tmp_path):
    """A run stored before the probes were paired (no ``paired``) has no fast-state round: it is
    counted apart, not a KeyError or a NaN ratio."""
    stored = tmp_path / ".quantbench"
    stored.mkdir()
    base = _stored_run([1.0] * 41, [2.0] * 40)
    base["runs"] = base["runs"] * 3
    unpaired = _stored_run([1.0] * 41, [2.0] * 40)
    del unpaired["runs"][0]["benchmarks"][0]["paired"]
    for name, snap in [("base", base), ("run_0_1", _stored_run([1.0] * 41, [2.0] * 40)), ("run_0_2", unpaired)]:
        (stored / f"{name}.json").write_text(json.dumps(snap))
        storage.load(stored / f"{name}.json")
    table = "\n".join(_script("gate_calibration/analyse").fast_state_table(tmp_path))
    assert "| unchanged | gemv | 0 of 1 | 1.000 - 1.000 | 1 |" in table


@pytest.mark.parametrize(("argv", "message"), [
    (["--formats", "Q4_K,Q9_Z"], "unknown or unsupported qtype 'Q9_Z'"),
    (["--threads", "0"], "argument --threads: expected a positive whole number, got '0'"),
    (["--threads", "1", "100000"], "argument --threads: at most"),
])
def test_compile_time_refuses_a_bad_option_naming_it(argv, message, capsys):
    assert message in _refused("compile_time", argv, capsys)
