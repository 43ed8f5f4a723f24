"""``pytest --quantbench`` in processes of their own, for what only a real process shows: a whole
save / compare / gate cycle, A/B timing verdicts, xdist's workers, Ctrl-C, two processes saving one
baseline at once, and a hanging kernel stopped by pytest-timeout. The slow tier (``-m slow``); every
other plugin run is in this process (test_plugin.py, test_faults.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from downstream import FAST, KEY, baseline, environment
from downstream import run as _downstream_run

from pytest_quantbench import storage

pytestmark = pytest.mark.slow


def _run(pytester: pytest.Pytester, *args: str, which: str = "good", env: dict | None = None) -> pytest.RunResult:
    return _downstream_run(pytester, *args, which=which, env=env, subprocess=True)


def test_the_gate_fails_a_slowed_kernel_and_passes_the_same_code(project):
    # A 4x slowdown against a 100 % threshold, at 64 x 4096 weights (tens of microseconds a call):
    # far from the noise of a shared CI machine either way (microsecond-sized calls swung by 1.5x).
    select = ["--quantbench", "-k", "throughput and (timed or probe)", "--quantbench-sizes=64x4096"]
    save = _run(project, *select, "--quantbench-save=base", which="slowed")
    assert save.ret == 0, save.stdout.str()
    stored = json.loads((project.path / ".quantbench" / "base.json").read_text())
    (run,) = stored["runs"]
    assert {b["info"]["impl"] for b in run["benchmarks"]} == {"timed", "np.copyto"}
    assert all(len(b["rounds"]) >= 5 for b in run["benchmarks"])
    for b in run["benchmarks"]:  # the kernel's rounds come with the probes timed in between them
        if b["info"]["impl"] == "timed":
            assert sorted(b["paired"]) == ["compute", "memory"]
            assert all(len(times) == len(b["rounds"]) + 1 for times in b["paired"].values())

    slow = _run(project, *select, "--quantbench-compare=base", "--quantbench-fail-on=100", which="slowed",
                env={"SLOWDOWN": "3.0"})
    assert slow.ret == 1, slow.stdout.str()
    slow.stdout.fnmatch_lines(["*quantbench gate*",
                               "timed|Q4_K|dequantize|64x4096 * slower * 1 * memory probe, paired (the op's)  FAIL*",
                               "*quantbench gate FAILED: significantly slower: timed|Q4_K|dequantize|64x4096*"])

    same = _run(project, *select, "--quantbench-compare", "--quantbench-fail-on=100", which="slowed")
    assert same.ret == 0, same.stdout.str()
    same.stdout.fnmatch_lines(["timed|Q4_K|dequantize|64x4096 *"])
    same.stdout.no_fnmatch_line("*FAIL*")


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


def test_under_xdist_conformance_runs_and_benchmarks_skip_with_one_line(project):
    pytest.importorskip("xdist")
    result = _run(project, "--quantbench", "-n", "2", "-k", "mine or probe", "-rs")
    result.stdout.fnmatch_lines([
        "*quantbench: benchmarks skipped under pytest-xdist*",
        "SKIPPED * quantbench benchmarks do not run under pytest-xdist (-n)*",
    ])
    result.assert_outcomes(passed=1 + 3, skipped=2)  # Hypothesis and the 3 fixed shapes of Q4_K


def test_a_run_under_xdist_measures_nothing_and_does_not_replace_a_stored_one(project):
    pytest.importorskip("xdist")
    path, before = baseline(project)
    result = _run(project, "--quantbench", "-k", "mine or probe", "-n", "2", "--quantbench-save=main")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*quantbench: --quantbench-save main: NOT saved: this run measured no benchmarks*"])
    assert path.read_bytes() == before


def test_ctrl_c_during_a_saving_run_keeps_the_stored_run(project):
    path, before = baseline(project)
    # Unbuffered, so that the child's lines arrive as they are printed, not in blocks.
    env = environment(WHICH="good", PYTHONUNBUFFERED="1")
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


def test_two_pytest_processes_saving_one_name_both_finish_and_leave_a_whole_file(project):
    env = environment(WHICH="good")
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


def test_a_hanging_kernel_is_stopped_by_pytest_timeout(project):
    pytest.importorskip("pytest_timeout")
    start = time.time()
    result = _run(project, "--quantbench", "-k", "conformance and mine", "--timeout=5", "--timeout-method=thread",
                  which="hangs")
    assert time.time() - start < 120
    assert result.ret != pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*Timeout*"])
