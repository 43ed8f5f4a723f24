"""The automatic thread choice follows what the calls measure: all threads while they pay, one
thread when a busy neighbour makes them slower, all threads again when it leaves."""

from __future__ import annotations

import numpy as np
import pytest

import quantbench_kernels as qk
from quantbench_kernels import autothreads
from quantbench_kernels.autothreads import PROBE_EVERY, Choice

M = 1 << 20  # weights per call


def _calls(choice: Choice, n: int, serial_s: float, parallel_s: float) -> str:
    """``n`` calls whose serial and parallel kinds take the given seconds: "s"/"p" per call."""
    out = []
    for _ in range(n):
        parallel = choice.next_is_parallel()
        choice.record(parallel, parallel_s if parallel else serial_s, M)
        out.append("p" if parallel else "s")
    return "".join(out)


def test_a_quiet_machine_keeps_all_threads_and_checks_one_thread_once_in_a_while():
    choice = Choice()
    calls = _calls(choice, 3 * PROBE_EVERY, serial_s=1.7e-3, parallel_s=1e-3)
    assert calls.startswith("ppss")  # each kind's first call compiles; the serial rate is measured at once
    assert choice.parallel and calls[4:].count("s") == len(calls[4:]) // PROBE_EVERY


def test_two_threads_collapsing_under_a_neighbour_switch_to_one_thread_after_two_slow_calls():
    choice = Choice()
    _calls(choice, 10, serial_s=1.7e-3, parallel_s=1e-3)
    calls = _calls(choice, 2 * PROBE_EVERY, serial_s=1.7e-3, parallel_s=100e-3)  # the collapse: 100x
    assert calls.startswith("pps") and calls.count("p") <= 4 and not choice.parallel
    calls = _calls(choice, 4 * PROBE_EVERY, serial_s=1.7e-3, parallel_s=1e-3)  # the neighbour left
    back = calls.index("p")
    assert back <= 2 * PROBE_EVERY and choice.parallel  # back at the next probe (one had failed: 128 calls)
    assert calls[back:].count("s") <= len(calls[back:]) // PROBE_EVERY  # but for the probes of one thread


def test_probes_during_a_long_collapse_come_less_and_less_often():
    choice = Choice()
    _calls(choice, 10, serial_s=1.7e-3, parallel_s=1e-3)
    calls = _calls(choice, 8000, serial_s=1.7e-3, parallel_s=100e-3)
    probes = [i for i, c in enumerate(calls) if c == "p" and i > calls.index("s")]  # once on one thread
    gaps = [b - a for a, b in zip(probes, probes[1:], strict=False)]
    assert gaps[:5] == [2 * PROBE_EVERY, 4 * PROBE_EVERY, 8 * PROBE_EVERY, 16 * PROBE_EVERY, 32 * PROBE_EVERY]
    assert set(gaps[5:]) <= {autothreads.MAX_PROBE_EVERY} and len(probes) < 12  # of 8000 calls, not 1 in 64
    calls = _calls(choice, 2 * autothreads.MAX_PROBE_EVERY, serial_s=1.7e-3, parallel_s=1e-3)  # it ends
    assert choice.parallel and choice.probe_every == PROBE_EVERY


def test_stalled_calls_now_and_then_do_not_give_up_the_threads():
    choice = Choice()
    _calls(choice, 20, serial_s=1.7e-3, parallel_s=1e-3)
    for _ in range(20):  # the neighbour holds the core for its 4 ms time slice, one call in ten
        choice.record(True, 4.4e-3, M)
        assert choice.parallel
        _calls(choice, 9, serial_s=1.7e-3, parallel_s=1e-3)


def test_parallel_threads_that_never_pay_are_not_used():
    choice = Choice()
    calls = _calls(choice, 2 * PROBE_EVERY, serial_s=1e-3, parallel_s=1.2e-3)
    assert not choice.parallel and calls[10:].count("p") <= 2


def test_real_kernels_take_the_choice_when_threads_are_automatic_and_never_when_given(monkeypatch):
    monkeypatch.setattr(autothreads, "_CHOICES", {})
    x = np.random.default_rng(0).standard_normal((512, 4096)).astype(np.float32)  # 2M weights: parallel
    w = qk.quantize(x, "Q4_0", threads=2)
    assert autothreads.states() == {}  # given threads: no choice recorded
    out = [qk.dequantize(w, "Q4_0") for _ in range(5)]
    (choice,) = autothreads.states().values()
    assert choice.serial_seen + choice.parallel_seen == 5
    for got in out:  # whichever kind ran, the same bits
        assert np.array_equal(got.view(np.uint32), qk.dequantize(w, "Q4_0", threads=1).view(np.uint32))


def test_the_static_switch_turns_the_measuring_off(monkeypatch):
    monkeypatch.setattr(autothreads, "_CHOICES", {})
    monkeypatch.setattr(autothreads, "STATIC", True)
    w = qk.quantize(np.ones((512, 4096), np.float32), "Q4_0", threads=1)
    qk.dequantize(w, "Q4_0")
    assert autothreads.states() == {}


@pytest.mark.parametrize("weights", [0, 1])
def test_a_call_of_no_weights_does_not_divide_by_zero(weights):
    choice = Choice()
    choice.record(True, 1e-3, weights)
    choice.record(True, 1e-3, weights)
    assert choice.parallel_rate == 1e-3


@pytest.mark.parametrize(("value", "static"), [("", False), ("auto", False), ("static", True), ("STATIC", True)])
def test_the_environment_switch_takes_its_two_values(value, static):
    assert autothreads._static(value) is static


def test_a_misspelt_environment_switch_is_named_in_a_warning_and_ignored():
    with pytest.warns(RuntimeWarning, match="QUANTBENCH_AUTO_THREADS='statc' is neither auto nor static: ignored"):
        assert autothreads._static("statc") is False
