"""The throwaway downstream project that the plugin's tests run ``pytest --quantbench`` in (pytester).

One conftest registers the kernels every such test needs, chosen by the environment variable
``WHICH``. :func:`run` runs pytest in this process (pytester's in-process runner: about a second,
against several for a new interpreter that imports Numba again), or, with ``subprocess=True``, in a
process of its own, for what only a real process shows (a Ctrl-C, a hard timeout, xdist's
workers, two processes saving at once, a whole save / compare / gate cycle).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from pytest_quantbench import storage
from pytest_quantbench.findings import Measurement
from pytest_quantbench.table import PROBE, tag

# Small and quick: one 16 x 4096 size, short benchmarks, few Hypothesis examples.
FAST = ["--quantbench-sizes=16x4096", "--benchmark-max-time=0.05", "-p", "no:cacheprovider"]
KEY = "mine|Q4_K|dequantize|16x4096"  # the "good" kernel's benchmark key at that size

# The tests folder, where the conftest imports the shared kernels (mutants.py) from, in a process
# of its own too.
TESTS = str(Path(__file__).parent)

CONFTEST = f"""
import sys
sys.path.insert(0, {TESTS!r})
""" + """
import os
import time
import numpy as np
from hypothesis import settings
import quantbench_kernels as qk
from pytest_quantbench import Kernel
from mutants import wide_rows_wrong, zero_past_1024

settings.register_profile("downstream", max_examples=10, deadline=None)
settings.load_profile("downstream")


def mine(raw):
    return qk.dequantize(raw, "Q4_K", backend="reference")


def broken(raw):
    out = qk.dequantize(raw, "Q4_K", backend="reference")
    out[0, 3] = 12345.0 if out[0, 3] != 12345.0 else 0.0  # wrong in one weight of one block
    return out


_BUFFERS = {}


def slowed(raw):
    # The product's one-thread kernel into a reused buffer, plus extra work: SLOWDOWN=3.0 spins for
    # three times as long as the kernel took, so each call takes four times as long.
    extra = float(os.environ.get("SLOWDOWN", "0"))
    start = time.perf_counter()
    out = _BUFFERS.setdefault(len(raw), np.empty((len(raw), 256), np.float32))
    qk.dequantize(raw, "Q4_K", threads=1, out=out)
    until = start + (time.perf_counter() - start) * (1 + extra)
    while extra and time.perf_counter() < until:
        pass
    return out


def raising(raw):
    raise RuntimeError("no AVX-1024 on this CPU")


def flaky(raw):
    if os.environ.get("FLAKY_NOW"):
        raise RuntimeError("lost the device")
    return mine(raw)


def weighted(x, imatrix):
    return qk.quantize(x, "Q5_0", imatrix=imatrix)


def unweighted(x, imatrix):  # the mistake of ignoring the importance
    return qk.quantize(x, "Q5_0").reshape(x.shape[0], -1)


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


def two_args(raw, scale):  # a dequantize kernel with the wrong signature
    return mine(raw) * scale


KERNELS = {
    "good": [Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=mine)],
    "broken": [Kernel(name="broken", qtype="Q4_K", op="dequantize", fn=broken)],
    "slowed": [Kernel(name="timed", qtype="Q4_K", op="dequantize", fn=slowed)],
    "bad": [
        Kernel(name="transposer", qtype="Q4_K", op="transpose", fn=mine),
        Kernel(name="q9", qtype="Q9_K", op="dequantize", fn=mine),
        Kernel(name="raiser", qtype="Q4_K", op="dequantize", fn=raising),
    ],
    "twins": [Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=mine),
              Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=qk.dequantize)],
    "reserved": [Kernel(name=n, qtype="Q4_K", op="dequantize", fn=mine) for n in ("reference", "np.copyto")]
                + [Kernel(name="quantbench-numba", qtype="Q4_K", op="quantize", fn=mine)],
    "flaky": [Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=flaky)],
    "imatrix": [Kernel(name="weighted", qtype="Q5_0", op="quantize_imatrix", fn=weighted),
                Kernel(name="unweighted", qtype="Q5_0", op="quantize_imatrix", fn=unweighted)],
    "hangs": [Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=hangs)],
    "wrongsig": [Kernel(name="wrongsig", qtype="Q4_K", op="dequantize", fn=two_args),
                 Kernel(name="raiser", qtype="Q4_K", op="dequantize", fn=raising)],
    "shapes": [Kernel(name="zero-past-1024", qtype="Q4_0", op="gemv", fn=zero_past_1024),
               Kernel(name="wide-rows-wrong", qtype="Q4_0", op="gemv", fn=wide_rows_wrong)],
    "ab": [Kernel(name="mine", qtype="Q4_K", op="dequantize", fn=mine),
           Kernel(name="fast", qtype="Q4_K", op="dequantize", fn=fast),
           Kernel(name="fast2", qtype="Q4_K", op="dequantize", fn=fast),
           Kernel(name="other-op", qtype="Q4_K", op="quantize", fn=lambda x: qk.quantize(x, "Q4_K"))],
}


def pytest_quantbench_kernels():
    return KERNELS[os.environ.get("WHICH", "good")]
"""

# Those of an xdist worker running this suite: a pytest started from it must not see them
# (pytest-benchmark turns itself off where PYTEST_XDIST_WORKER is set, and warns at the end).
XDIST_WORKER_ENV = ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID")
# Unset unless a run sets them: the environment variables the conftest reads, and the above.
_ENV = ("WHICH", "SLOWDOWN", "FLAKY_NOW", *XDIST_WORKER_ENV)


def environment(**extra: str) -> dict[str, str]:
    """This process's environment for a pytest of its own: without the variables above, with ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k not in _ENV}, **extra}


def make(pytester: pytest.Pytester) -> pytest.Pytester:
    """The project: the conftest above and one test of its own."""
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_own="def test_own():\n    assert 1 + 1 == 2\n")
    return pytester


def run(pytester: pytest.Pytester, *args: str, which: str = "good", env: dict[str, str] | None = None,
        subprocess: bool = False) -> pytest.RunResult:
    """``pytest FAST *args`` in the project with the kernels ``which`` and ``env`` set, in this
    process unless ``subprocess``. The project's conftest loads a Hypothesis profile of its own:
    an in-process run puts this session's back afterwards."""
    profile = settings.get_current_profile_name()
    with pytest.MonkeyPatch.context() as mp:
        for key in _ENV:
            mp.delenv(key, raising=False)
        for key, value in {"WHICH": which, **(env or {})}.items():
            mp.setenv(key, value)
        if subprocess:
            return pytester.runpytest_subprocess(*FAST, *args)
        try:
            return pytester.runpytest_inprocess(*FAST, *args)
        finally:
            settings.load_profile(profile)


def stored_run(path: Path, impl: str = "mine", seed: int = 0) -> bytes:
    """Write a valid stored run of one kernel and the probe (made up, this machine) at ``path``; its bytes."""
    rng = np.random.default_rng(seed)
    ms = [Measurement(tag(op="dequantize", fmt="Q4_K", size="16x4096", impl=impl, weights=65536, nbytes=298_000,
                          threads=None), list(1e-4 * (1 + 0.01 * rng.random(50)))),
          Measurement(tag(op="copyto", fmt="-", size="16x4096", impl=PROBE, weights=65536, nbytes=524_288,
                          threads=1), list(5e-5 * (1 + 0.01 * rng.random(50))))]
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.save(path.parent, path.stem, storage.snapshot(ms))
    return path.read_bytes()


def baseline(pytester: pytest.Pytester) -> tuple[Path, bytes]:
    """The project's stored run "main" (:func:`stored_run`): its path and bytes."""
    path = pytester.path / ".quantbench" / "main.json"
    return path, stored_run(path)
