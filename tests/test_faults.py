"""Fault injection: the gate never passes a regression silently and never loses a stored run.

Each test runs ``pytest --quantbench`` for real in a throwaway project (pytester) with one fault
(a bad option, a hostile or corrupt stored run, a run that measures nothing or only part of what
it selected, an interruption, concurrent savers, a bad GGUF path, a hanging kernel) and asserts
the exit code, the message and, where a stored run exists, its bytes before and after.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import quantbench_kernels as qk
from pytest_quantbench import gate, storage
from pytest_quantbench.record import Measurement
from pytest_quantbench.throughput import PROBE, tag

pytest_plugins = ["pytester"]

FAST = ["--quantbench-sizes=16x4096", "--benchmark-max-time=0.02", "-p", "no:cacheprovider"]
KEY = "mine|Q4_K|dequantize|16x4096"

CONFTEST = """
import os
import time
import numpy as np
import quantbench_kernels as qk
from hypothesis import settings
from pytest_quantbench import Kernel

settings.register_profile("faults", max_examples=5, deadline=None)
settings.load_profile("faults")


def mine(raw):
    return qk.dequantize(raw, "Q4_K", backend="reference")


def flaky(raw):
    if os.environ.get("FLAKY_NOW"):
        raise RuntimeError("lost the device")
    return mine(raw)


def hangs(raw):
    while True:
        time.sleep(0.01)


_OUT = {}


def fast(raw):
    # One output buffer for "fast" and "fast2", the same kernel under two names: at 65,536 weights
    # a kernel's own buffer can sit on physical pages that make it several percent slower or
    # faster than another's for a whole process (docs/gate.md), which A/B would rightly report.
    out = _OUT.setdefault(raw.shape[0], np.empty((raw.shape[0], 256), np.float32))
    return qk.dequantize(raw, "Q4_K", out=out)


KERNELS = {
    "good": [Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=mine)],
    "twins": [Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=mine),
              Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=qk.dequantize)],
    "reserved": [Kernel(name=n, qtype="Q4_K", op="dequantize", fn=mine) for n in ("reference", "np.copyto")]
                + [Kernel(name="quantbench-numba", qtype="Q4_K", op="quantize", fn=mine)],
    "flaky": [Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=flaky)],
    "hangs": [Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=hangs)],
    "ab": [Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=mine),
           Kernel(name="fast", qtype="Q4_K", op="dequantize", fn=fast),
           Kernel(name="fast2", qtype="Q4_K", op="dequantize", fn=fast),
           Kernel(name="other-op", qtype="Q4_K", op="quantize", fn=qk.quantize)],
}


def pytest_quantbench_kernels():
    return KERNELS[os.environ.get("WHICH", "good")]
"""


@pytest.fixture
def project(pytester):
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_own="def test_own():\n    assert 1 + 1 == 2\n")
    return pytester


def _run(pytester, *args, which: str = "good", env: dict | None = None):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WHICH", which)
        for key in ("FLAKY_NOW",):
            mp.delenv(key, raising=False)
        for key, value in (env or {}).items():
            mp.setenv(key, value)
        return pytester.runpytest_subprocess(*FAST, *args)


def _stored_run(path: Path, impl: str = "mine", seed: int = 0) -> bytes:
    """Write a valid stored run of one kernel and the probe (made up, this machine) at ``path``."""
    rng = np.random.default_rng(seed)
    ms = [Measurement(tag(op="dequantize", fmt="Q4_K", size="16x4096", impl=impl, weights=65536, nbytes=298_000,
                          threads=None), list(1e-4 * (1 + 0.01 * rng.random(50)))),
          Measurement(tag(op="copyto", fmt="-", size="16x4096", impl=PROBE, weights=65536, nbytes=524_288,
                          threads=1), list(5e-5 * (1 + 0.01 * rng.random(50))))]
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.save(path.parent, path.stem, storage.snapshot(ms))
    return path.read_bytes()


def _baseline(pytester) -> tuple[Path, bytes]:
    path = pytester.path / ".quantbench" / "main.json"
    return path, _stored_run(path)


# ---------------------------------------------------------------------------------------------
# Regressions that passed with exit code 0
# ---------------------------------------------------------------------------------------------


def test_two_kernels_with_one_name_format_and_op_fail_naming_both_registrations(project):
    result = _run(project, "--quantbench", "-k", "own or (conformance and mine)", which="twins")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*kernel 'mine' (Q4_K dequantize) is registered 2 times (the pytest_quantbench_"
                                 "kernels hook of *conftest.py; the pytest_quantbench_kernels hook of *conftest.py)*"])


def test_twin_kernels_cannot_pass_the_gate(project):
    path, before = _baseline(project)
    result = _run(project, "--quantbench", "-k", "throughput and (mine or probe)", "--quantbench-compare=main",
                  "--quantbench-fail-on=10", which="twins")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*quantbench gate: the baseline has kernels this run did not measure: " + KEY + "*",
                                 "*quantbench gate FAILED*"])
    assert path.read_bytes() == before


def test_kernels_named_like_the_plugins_own_rows_are_refused(project):
    result = _run(project, "--quantbench", "-k",
                  "conformance and not gguf and (reference or copyto or numba-Q4_K-quantize)", which="reserved")
    result.stdout.fnmatch_lines_random([
        "*kernel 'reference' (Q4_K dequantize, from *conftest.py): the name 'reference' is one the plugin uses*",
        "*kernel 'np.copyto' (Q4_K dequantize, from *conftest.py): the name 'np.copyto' is one the plugin uses*",
        "*kernel 'quantbench-numba' (Q4_K quantize) is registered 2 times (*pytest-quantbench's built-in kernels*",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED


@pytest.mark.parametrize("paired", [True, False], ids=["paired-probes", "probe-test-only"])
def test_an_undefined_ratio_fails_the_gate_instead_of_reading_as_same(paired):
    probes = {"memory": [1.0, 1.0, 1.0], "compute": [1.0, 1.0, 1.0]} if paired else {}
    base = storage.snapshot([Measurement(tag(op="dequantize", fmt="Q4_K", size="s", impl="mine", weights=1,
                                             nbytes=1, threads=None), [1.0, 1.0], paired=probes),
                             Measurement(tag(op="copyto", fmt="-", size="s", impl=PROBE, weights=1, nbytes=1,
                                             threads=1), [1.0, 1.0])])
    current = [Measurement(dict(b["info"]), [float("nan"), float("nan")], paired=probes)
               for b in base["runs"][0]["benchmarks"]]
    verdicts, problems = gate.compare(base, current, 5)
    assert verdicts == [] and problems == ["mine|Q4_K|dequantize|s: the ratio is undefined (nan, interval [nan, nan])"]


@pytest.mark.parametrize("value,message", [
    ("nan", "--quantbench-fail-on must be a percentage from 0 to 1000, got nan"),
    ("-5", "--quantbench-fail-on must be a percentage from 0 to 1000, got -5.0"),
    ("1e9", "--quantbench-fail-on must be a percentage from 0 to 1000, got 1000000000.0"),
])
def test_bad_thresholds_are_usage_errors(project, value, message):
    result = _run(project, "--quantbench", "--quantbench-compare=main", f"--quantbench-fail-on={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}*"])


def test_a_threshold_without_a_baseline_is_a_usage_error(project):
    result = _run(project, "--quantbench", "--quantbench-fail-on=5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quantbench-fail-on needs a baseline to compare with: --quantbench-compare "
                                 "[[]NAME[]] (a stored run) or --quantbench-ab OLD,NEW*"])


# ---------------------------------------------------------------------------------------------
# Good stored runs that were lost
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ["-n", "2"],
    ["--benchmark-disable"],
    ["--benchmark-skip"],
    ["-k", "conformance"],
], ids=["xdist", "benchmark-disable", "benchmark-skip", "no-benchmark-selected"])
def test_a_run_that_measured_nothing_does_not_replace_a_stored_one(project, args):
    if "-n" in args:
        pytest.importorskip("xdist")
    path, before = _baseline(project)
    result = _run(project, "--quantbench", *(["-k", "mine or probe"] if "-k" not in args else []), *args,
                  "--quantbench-save=main")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*quantbench: --quantbench-save main: NOT saved: this run measured no benchmarks*"])
    assert path.read_bytes() == before


def test_a_run_that_measured_part_of_its_benchmarks_does_not_replace_a_stored_one(project):
    path, before = _baseline(project)
    result = _run(project, "--quantbench", "-k", "throughput and (mine or probe)", "--quantbench-save=main",
                  which="flaky", env={"FLAKY_NOW": "1"})
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*NOT saved: 3 of the selected benchmarks measured nothing (failed or skipped): "
                                 "quantbench::test_throughput?mine-Q4_K-dequantize-16x4096-pass0?*"])
    assert path.read_bytes() == before


def test_ctrl_c_during_a_saving_run_keeps_the_stored_run(project):
    path, before = _baseline(project)
    # Unbuffered, so that the child's lines arrive as they are printed, not in blocks.
    env = dict(os.environ, WHICH="good", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "pytest", *FAST, "--quantbench", "-k", "throughput and (mine or probe)", "-v",
           "--quantbench-sizes=16x4096,64x4096", "--quantbench-passes=4", "--benchmark-max-time=0.5",
           "--quantbench-save=main"]
    # A suite started in the background by a non-interactive shell ignores SIGINT, and its children
    # inherit that: the child must take Ctrl-C as a terminal would deliver it.
    proc = subprocess.Popen(cmd, cwd=project.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    for line in proc.stdout:  # wait until some benchmarks have been measured
        lines.append(line)
        if "test_throughput" in line and "PASSED" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    output = "".join(lines) + rest
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output[-3000:]
    assert "NOT saved: the run was interrupted" in output
    assert path.read_bytes() == before


storage_keep = 5


def _save_many(args: tuple[str, int, int]) -> int:
    directory, worker, count = args
    for i in range(count):
        ms = [Measurement(tag(op="dequantize", fmt="Q4_K", size="s", impl="mine", weights=1, nbytes=1,
                              threads=None), [float(worker + 1), float(i + 1)] * 50)]
        storage.save(Path(directory), "main", storage.snapshot(ms), keep=storage_keep)
    return count


def _read_while_saving(directory: str, stop_after: float) -> int:
    reads = 0
    end = time.time() + stop_after
    path = Path(directory) / "main.json"
    while time.time() < end:
        if path.exists():
            storage.load(path)  # always a whole, valid run
            reads += 1
    return reads


def test_hundreds_of_concurrent_saves_leave_one_complete_stored_run(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "machine", lambda: {"cpu": "c", "cores": 2, "arch": "x", "system": "s"})
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(5) as pool:
        reader = pool.apply_async(_read_while_saving, (str(tmp_path), 3.0))
        saved = pool.map(_save_many, [(str(tmp_path), w, 100) for w in range(4)])
        assert reader.get(timeout=120) > 0
    assert saved == [100] * 4
    final = storage.load(tmp_path / "main.json")
    assert len(final["runs"]) == storage_keep  # every save landed, the last ones kept
    assert final["runs"][-1]["benchmarks"][0]["rounds"][1] == 100.0  # the last save of one of the workers
    assert sorted(p.name for p in tmp_path.iterdir()) == [".main.lock", "main.json"]  # no temporary file left


def test_two_pytest_processes_saving_one_name_both_finish_and_leave_a_whole_file(project):
    env = dict(os.environ, WHICH="good")
    cmd = [sys.executable, "-m", "pytest", *FAST, "--quantbench", "-k", "throughput and (mine or probe)", "-q",
           "--quantbench-passes=1", "--quantbench-save=main"]
    procs = [subprocess.Popen(cmd, cwd=project.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stored = storage.load(project.path / ".quantbench" / "main.json")
    assert len(stored["runs"]) == 2  # both runs landed, one after the other
    for run in stored["runs"]:
        assert {b["key"] for b in run["benchmarks"]} == {KEY, "np.copyto|-|copyto|16x4096"}


# ---------------------------------------------------------------------------------------------
# Measurements thrown away at the very end: refused at the door instead
# ---------------------------------------------------------------------------------------------


def test_a_300_character_save_name_is_a_usage_error_before_anything_runs(project):
    result = _run(project, "--quantbench", f"--quantbench-save={'x' * 300}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quantbench-save: 'xxx*' is not a usable run name (1-100 characters*"])


def test_a_storage_path_under_a_file_is_a_usage_error(project):
    (project.path / "afile").write_text("not a folder")
    result = _run(project, "--quantbench", "--quantbench-save=main", "--quantbench-storage=afile/runs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quantbench-storage: afile/runs cannot hold stored runs: *Not a directory*"])


def test_a_read_only_storage_folder_is_a_usage_error(project):
    mount = project.path / "ro"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only file system here (needs root and mount)")
    try:
        result = _run(project, "--quantbench", "--quantbench-save=main", f"--quantbench-storage={mount}")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--quantbench-storage: * cannot hold stored runs: *Read-only file system*"])


@pytest.mark.parametrize("sizes", ["4x0", "0x256", "64x100", "100000x100000", "4096x"])
def test_impossible_sizes_are_usage_errors(project, sizes):
    result = _run(project, "--quantbench", f"--quantbench-sizes={sizes}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--quantbench-sizes: '{sizes}' *"])


@pytest.mark.parametrize("passes", ["0", "101"])
def test_impossible_pass_counts_are_usage_errors(project, passes):
    result = _run(project, "--quantbench", f"--quantbench-passes={passes}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--quantbench-passes must be from 1 to 100, got {passes}*"])


HOSTILE = {
    "missing-info": lambda s: s["runs"][0]["benchmarks"][0].pop("info"),
    "nan-round": lambda s: s["runs"][0]["benchmarks"][0]["rounds"].__setitem__(3, float("nan")),
    "negative-round": lambda s: s["runs"][0]["benchmarks"][0]["rounds"].__setitem__(0, -1.0),
    "string-round": lambda s: s["runs"][0]["benchmarks"][0]["rounds"].__setitem__(0, "fast"),
    "no-rounds": lambda s: s["runs"][0]["benchmarks"][0].__setitem__("rounds", []),
    "key-mismatch": lambda s: s["runs"][0]["benchmarks"][0].__setitem__("key", "other|Q4_K|dequantize|16x4096"),
    "duplicate": lambda s: s["runs"][0]["benchmarks"].append(json.loads(json.dumps(s["runs"][0]["benchmarks"][0]))),
    "no-machine": lambda s: s.pop("machine"),
    "bool-weights": lambda s: s["runs"][0]["benchmarks"][0]["info"].__setitem__("weights", True),
    "not-an-object": lambda s: s.clear(),
    "short-paired": lambda s: s["runs"][0]["benchmarks"][0].__setitem__("paired", {"memory": [1.0, 2.0]}),
    "no-runs": lambda s: s["runs"].clear(),
}
MESSAGES = {
    "missing-info": "runs[[]0[]].benchmarks[[]0[]].info: is missing or not an object",
    "nan-round": "runs[[]0[]].benchmarks[[]0[]].rounds[[]3[]]: is nan, not a positive finite number of seconds",
    "negative-round": "runs[[]0[]].benchmarks[[]0[]].rounds[[]0[]]: is -1.0, not a positive finite number of seconds",
    "string-round": "runs[[]0[]].benchmarks[[]0[]].rounds[[]0[]]: is 'fast', not a positive finite number of seconds",
    "no-rounds": "runs[[]0[]].benchmarks[[]0[]].rounds: is missing, not a list or empty",
    "key-mismatch": ("runs[[]0[]].benchmarks[[]0[]].key: is 'other|Q4_K|dequantize|16x4096', its info says '"
                     + KEY + "'"),
    "duplicate": "runs[[]0[]].benchmarks[[]2[]].key: '" + KEY + "' appears twice in pass 0",
    "no-machine": "machine: is missing or not an object",
    "bool-weights": "runs[[]0[]].benchmarks[[]0[]].info.weights: is True, not a int",
    "not-an-object": "version: is None, expected one of (1, 2)",
    "short-paired": "runs[[]0[]].benchmarks[[]0[]].paired.memory: is not a list of 51 times (one more than the rounds)",
    "no-runs": "runs: is missing, not a list or empty",
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_stored_run_is_a_reported_gate_problem_never_a_traceback_or_a_pass(project, case):
    path, _ = _baseline(project)
    snap = json.loads(path.read_text())
    HOSTILE[case](snap)
    path.write_text(json.dumps(snap))  # json writes NaN as NaN, as a careless tool would
    before = path.read_bytes()
    result = _run(project, "--quantbench", "-k", "throughput and (mine or probe)", "--quantbench-compare=main",
                  "--quantbench-fail-on=10")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"*quantbench gate: stored run *main.json is unreadable or corrupt: {MESSAGES[case]}*",
                                 "*quantbench gate FAILED: the baseline cannot be used*"])
    result.stdout.no_fnmatch_line("*Traceback*")
    assert path.read_bytes() == before


def test_a_huge_or_deeply_nested_stored_run_is_refused(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(storage.StorageError, match="deep.json is unreadable or corrupt"):
        storage.load(deep)
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(storage.MAX_FILE_BYTES + 1)
    with pytest.raises(storage.StorageError, match="larger than any stored run"):
        storage.load(huge)


def test_the_machine_comes_from_py_cpuinfo():
    import cpuinfo

    here = storage.machine()
    assert here["cpu"] == cpuinfo.get_cpu_info()["brand_raw"] and here["cores"] == os.cpu_count()


# ---------------------------------------------------------------------------------------------
# Collection stopped the whole session: GGUF path problems are one failing test each
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "fifo", "missing", "not-gguf"])
def test_a_bad_gguf_path_is_one_failing_test_and_the_users_tests_still_run(project, kind):
    path = project.path / "model.gguf"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # opening it would block until a writer came
    elif kind == "not-gguf":
        path.write_bytes(b"PK\x03\x04" + bytes(60))
    expected = {"directory": "is a directory, not a file",
                "fifo": "is not a regular file (a pipe, socket or device)",
                "missing": "cannot be read: No such file or directory",
                "not-gguf": "is not a GGUF file"}[kind]
    result = _run(project, "--quantbench", f"--quantbench-gguf={path}", "-k", "own or gguf", "--timeout=60", "-rs")
    # One failure (the file's conformance test); its decode-step benchmarks (ours, llama.cpp's) skip, saying why.
    result.assert_outcomes(passed=1, failed=1, skipped=2)
    result.stdout.fnmatch_lines([f"*model.gguf* {expected}*"])
    result.stdout.fnmatch_lines([f"SKIPPED*no decode step:*{expected}*"])


def test_a_gguf_tensor_with_a_degenerate_shape_is_named(tmp_path):
    import gguf

    from pytest_quantbench.gguf_files import GGUFFileError, read_tensors

    writer = gguf.GGUFWriter(tmp_path / "odd.gguf", arch="llama")
    raw = qk.quantize(np.ones((2, 256), np.float32), "Q4_K")
    writer.add_tensor("blk.0.attn_q.weight", raw, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    data = bytearray((tmp_path / "odd.gguf").read_bytes())
    dims = data.find(np.array([256, 2], dtype="<u8").tobytes())  # the tensor's dims in its info
    assert dims > 0
    for value, message in [(0, r"tensor 'blk.0.attn_q.weight' \(Q4_K\) has a degenerate shape \[0, 2\]"),
                           (100, r"is truncated or corrupt: tensor 'blk.0.attn_q.weight' \(Q4_K\) has rows of 100 "
                                 r"weights, not a multiple of its 256-weight blocks"),
                           (512, r"is truncated or corrupt: tensor 'blk.0.attn_q.weight': its 576 bytes at byte \d+ "
                                 r"run past the end of the file")]:  # data past EOF
        data[dims:dims + 8] = np.array([value], dtype="<u8").tobytes()
        bad = tmp_path / f"odd{value}.gguf"
        bad.write_bytes(bytes(data))
        with pytest.raises(GGUFFileError, match=f"GGUF file '.*odd{value}.gguf'.* {message}"):
            read_tensors(bad)


# ---------------------------------------------------------------------------------------------
# The kernels API and a kernel that never returns
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", qk.BACKENDS)
def test_dequantize_into_a_buffer_that_overlaps_its_input_is_refused(backend):
    q = qk.quantize(np.linspace(-1, 1, 512, dtype=np.float32), "Q4_K")
    buf = np.zeros(2 * 256 * 4, dtype=np.uint8)
    buf[:q.size] = q.reshape(-1)
    before = buf.copy()
    with pytest.raises(ValueError, match="out shares memory with the input"):
        qk.dequantize(buf[:q.size].reshape(2, 144), "Q4_K", backend=backend, out=buf.view(np.float32).reshape(2, 256))
    assert np.array_equal(buf, before)


def test_a_hanging_kernel_is_stopped_by_pytest_timeout(project):
    pytest.importorskip("pytest_timeout")
    start = time.time()
    result = _run(project, "--quantbench", "-k", "conformance and mine", "--timeout=5", "--timeout-method=thread",
                  which="hangs")
    assert time.time() - start < 120
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*Timeout*"])


def test_comparing_with_the_latest_run_while_saving_compares_with_the_previous_one(project):
    path = project.path / ".quantbench" / "older.json"
    _stored_run(path, impl="mine")
    result = _run(project, "--quantbench", "-k", "throughput and (mine or probe)", "--quantbench-compare",
                  "--quantbench-save=newer")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["*baseline: *older.json*"])
    result.stdout.fnmatch_lines(["*quantbench: saved this run as *newer.json*"])
    assert (project.path / ".quantbench" / "newer.json").exists()


# ---------------------------------------------------------------------------------------------
# A/B in one process: a verdict without a stored baseline, and its bad inputs
# ---------------------------------------------------------------------------------------------

def test_ab_fails_a_slower_new_kernel_and_passes_a_faster_one(project):
    result = _run(project, "--quantbench", "-k", "test_ab", "--quantbench-ab", "fast,mine", "--quantbench-ab",
                  "mine,fast", "--quantbench-fail-on=3", which="ab")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["quantbench: A/B: mine timed against fast, in this process, round by round",
                                 "quantbench: A/B: fast timed against mine, in this process, round by round",
                                 "*quantbench A/B (one process*",
                                 "fast -> mine|Q4_K|dequantize|16x4096 * slower * A/B, paired round by round  FAIL",
                                 "mine -> fast|Q4_K|dequantize|16x4096 * faster *",
                                 "*quantbench gate FAILED: significantly slower: fast -> mine|Q4_K|dequantize|16x4096"])


def test_ab_of_a_kernel_against_itself_passes(project):
    result = _run(project, "--quantbench", "-k", "test_ab", "--quantbench-ab", "fast,fast2", "--quantbench-fail-on=3",
                  "--benchmark-max-time=0.3", which="ab")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["fast -> fast2|Q4_K|dequantize|16x4096 * same *"])


@pytest.mark.parametrize("value", ["fast", "fast,", ",fast", "fast,fast", "a,b,c"])
def test_ab_values_that_are_not_two_kernel_names_are_usage_errors(project, value):
    result = _run(project, "--quantbench", f"--quantbench-ab={value}", which="ab")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--quantbench-ab: {value!r} is not OLD,NEW*"])


@pytest.mark.parametrize(("value", "message"), [
    ("fast,nobody", "no usable kernel is named 'nobody' (registered kernels: *fast*mine*other-op*)"),
    ("fast,other-op", "'fast' (Q4_K dequantize) and 'other-op' (Q4_K quantize) share no format and op*"),
])
def test_ab_of_kernels_that_do_not_pair_is_a_failing_test_naming_them(project, value, message):
    result = _run(project, "--quantbench", "-k", "test_ab", f"--quantbench-ab={value}", "--quantbench-fail-on=3",
                  which="ab")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"*--quantbench-ab {value}: {message}"])
    result.stdout.fnmatch_lines(["*quantbench A/B: --quantbench-ab: no A/B benchmark measured*"])


def test_ab_that_measured_nothing_fails_the_gate_instead_of_passing(project):
    result = _run(project, "--quantbench", "-k", "test_ab", "--quantbench-ab=mine,fast", "--quantbench-fail-on=3",
                  "--benchmark-disable", which="ab")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*--quantbench-ab: no A/B benchmark measured*",
                                 "*quantbench gate FAILED: the baseline cannot be used*"])


@pytest.mark.parametrize("keep", ["0", "101"])
def test_impossible_keep_counts_are_usage_errors(project, keep):
    result = _run(project, "--quantbench", f"--quantbench-keep={keep}", "--quantbench-save=x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--quantbench-keep must be from 1 to 100, got {keep}*"])


def test_saving_over_a_corrupt_stored_run_refuses_and_keeps_it(project):
    path = project.path / ".quantbench" / "main.json"
    path.parent.mkdir()
    path.write_text("{not json")
    result = _run(project, "--quantbench", "-k", "throughput and (mine or probe)", "--quantbench-save=main")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*--quantbench-save main: NOT saved: stored run *main.json is unreadable or corrupt*"])
    assert path.read_text() == "{not json"


def test_import_from_loads_another_checkouts_kernels_beside_this_ones(tmp_path):
    for version, scale in (("new", 2.0), ("old", 1.0)):
        package = tmp_path / version / "mykernels"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text("from .impl import gemv\n")
        (package / "impl.py").write_text(f"def gemv(raw, x):\n    return {scale} * x\n")
    from pytest_quantbench import import_from

    new = import_from(tmp_path / "new" / "mykernels", "mykernels_new_for_test")
    old = import_from(tmp_path / "old" / "mykernels", "mykernels_old_for_test")
    assert new.gemv(None, 3.0) == 6.0 and old.gemv(None, 3.0) == 3.0
    single = tmp_path / "single.py"
    single.write_text("VALUE = 7\n")
    assert import_from(single, "single_for_test").VALUE == 7
    with pytest.raises(ImportError, match="is neither a Python file nor a package folder"):
        import_from(tmp_path / "nowhere", "nowhere_for_test")
    (tmp_path / "broken.py").write_text("raise RuntimeError('half written')\n")
    with pytest.raises(RuntimeError, match="half written"):
        import_from(tmp_path / "broken.py", "broken_for_test")
    assert "broken_for_test" not in sys.modules
