"""The automatic thread choice (``threads=None``), kept honest by what the calls measure.

On a quiet machine a kernel call of a million weights or more runs faster on all of Numba's
threads. On a loaded one it may not: with a neighbour on a core, a parallel region waits for its
slowest thread, and its calls come in episodes of 8 ms, 50-100 times one thread's time.
llama.cpp's CPU backend answers with chunks taken dynamically; here handing out iterations one at
a time did not stop the collapse, and libgomp's passive wait policy cost 37-80 % on a quiet machine
(tests/perf/two_threads.py; docs/results/2026-12-08-amd-epyc-zen3-two-threads.md), so instead
each kernel's automatic calls are timed (two ``perf_counter`` reads, under a microsecond against
the 40 us or more of a call that size) and compared per weight:

- in the parallel state, one call in every PROBE_EVERY runs on one thread, to keep the serial
  rate current; when the parallel rate is no better than the serial one, or two calls in a row
  are COLLAPSE times slower, the kernel goes serial;
- in the serial state, a call now and then tries all threads again (after PROBE_EVERY calls,
  doubling after each probe that fails, up to MAX_PROBE_EVERY), and the kernel goes back to
  parallel when that is at least RECOVERY times faster per weight.

Rates are seconds per weight: for the kind in use exponentially weighted (ALPHA), each sample
clipped at CLIP times the rate (an occasional stalled call is not a collapse); for the other, the
latest probe. Each kind's first call is not counted (it compiles). ``threads=`` given explicitly
is never second-guessed. QUANTBENCH_AUTO_THREADS=static in the environment turns the measuring
off (always all threads above the size threshold).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

PROBE_EVERY = 64
ALPHA = 0.125
# A sample counts as at most CLIP times the current rate: one stalled call (the neighbour holding
# the core for its time slice, 4 ms) moves the rate 25 %, short of the 1.7x between the kinds;
# a collapse (every call 10-100x) passes the serial rate in three calls.
CLIP = 3.0
# Two parallel calls in a row this many times slower per weight than the serial rate are a
# collapse (its calls come in episodes of 8 ms each, 50-100 times a call's time: waiting costs
# more than the 64 calls on one thread until the next probe); one alone is a stall, which a quiet
# VM has many times a second.
COLLAPSE = 8.0
RECOVERY = 0.9  # the parallel rate must beat the serial one by 10 % to win the kernel back
# A failed probe of all threads doubles the calls until the next, up to this many: a probe during
# a collapse costs what 50 calls on one thread do.
MAX_PROBE_EVERY = 2048


@dataclass
class Choice:
    """What one kernel's automatic calls measured: seconds per weight on one thread and on all
    (None until measured), which it uses now, and the calls since the other was last tried."""

    serial_rate: float | None = None
    parallel_rate: float | None = None
    serial_seen: int = 0
    parallel_seen: int = 0
    parallel: bool = True
    since_probe: int = 0
    probe_every: int = PROBE_EVERY  # the calls between probes of all threads while on one
    slow_in_a_row: int = 0  # parallel calls in a row past COLLAPSE

    def next_is_parallel(self) -> bool:
        """Whether the next call runs on all threads: the current state, but for the probe call
        (the other kind) once in every PROBE_EVERY calls, and at once while the other has no rate."""
        self.since_probe += 1
        mine, other = ((self.parallel_rate, self.serial_rate) if self.parallel
                       else (self.serial_rate, self.parallel_rate))
        every = PROBE_EVERY if self.parallel else self.probe_every
        if self.since_probe >= every or (mine is not None and other is None):  # the other, measured soon
            self.since_probe = 0
            return not self.parallel
        return self.parallel

    def record(self, parallel: bool, seconds: float, weights: int) -> None:
        """Fold one call's time in, and choose again."""
        rate = seconds / max(1, weights)
        current = parallel == self.parallel  # a probe's rate replaces the old one: it is the news
        if parallel:
            self.parallel_seen += 1
            if self.parallel_seen > 1:  # the first compiles
                self.parallel_rate = _ewma(self.parallel_rate if current else None, rate)
        else:
            self.serial_seen += 1
            if self.serial_seen > 1:  # the first may compile
                self.serial_rate = _ewma(self.serial_rate if current else None, rate)
        if self.serial_rate is None or self.parallel_rate is None:
            return
        if parallel:
            self.slow_in_a_row = self.slow_in_a_row + 1 if rate > COLLAPSE * self.serial_rate else 0
        if self.parallel and (self.parallel_rate >= self.serial_rate or self.slow_in_a_row >= 2):
            self.parallel = False
            self.parallel_rate = max(self.parallel_rate, rate)
        elif not self.parallel and self.parallel_rate < RECOVERY * self.serial_rate:
            self.parallel = True
            self.probe_every = PROBE_EVERY
        elif not self.parallel and parallel:  # a probe that failed: the next one later
            self.probe_every = min(2 * self.probe_every, MAX_PROBE_EVERY)


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - ALPHA) * old + ALPHA * min(new, CLIP * old)


_CHOICES: dict[int, Choice] = {}
SETTINGS = ("auto", "static")  # QUANTBENCH_AUTO_THREADS's values; unset is "auto"


def _static(value: str) -> bool:
    """Whether QUANTBENCH_AUTO_THREADS's ``value`` turns the measuring off; another value than
    SETTINGS' is ignored with a warning naming it (a typo must not pass unseen)."""
    if value.lower() not in ("", *SETTINGS):
        warnings.warn(f"QUANTBENCH_AUTO_THREADS={value!r} is neither {' nor '.join(SETTINGS)}: ignored (auto)",
                      RuntimeWarning, stacklevel=2)
    return value.lower() == "static"


STATIC = _static(os.environ.get("QUANTBENCH_AUTO_THREADS", ""))


def choice_of(kernel: Any) -> Choice:
    """The Choice of the kernel whose serial function is ``kernel`` (one per process)."""
    key = id(kernel)
    found = _CHOICES.get(key)
    if found is None:
        found = _CHOICES[key] = Choice()
    return found


def run(serial: Callable[..., Any], parallel: Callable[[], Any], weights: int, *args: Any) -> Any:
    """One automatic call of ``serial(*args)`` or ``parallel()`` (all threads), as the kernel's
    Choice says, timed and recorded."""
    if STATIC:
        return parallel()
    choice = choice_of(serial)
    use_parallel = choice.next_is_parallel()
    start = time.perf_counter()
    result = parallel() if use_parallel else serial(*args)
    choice.record(use_parallel, time.perf_counter() - start, weights)
    return result


def states() -> dict[int, Choice]:
    """Every kernel's Choice so far (for tests and ``quantbench bench``)."""
    return dict(_CHOICES)
