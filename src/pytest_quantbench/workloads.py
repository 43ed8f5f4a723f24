"""Benchmark inputs: weight-like data of each op's shape at each size, rotated past the last-level
cache at large sizes so that every timed call reads its input from memory, as in real use."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pytest

from quantbench_kernels import BlockFormat
from quantbench_kernels.compilation import CACHE

from .findings import record_benchmark
from .ops import OPS
from .options import Size
from .strategies import weight_like

ROTATE_FROM_WEIGHTS = 4 << 20  # sizes from 4M weights up are "large": their inputs rotate
# The copies of one large input together, at most: twice a 300 MB L3 (a Xeon's) fits, and a small
# machine is not asked for more memory than this.
MAX_ROTATION_BYTES = 1 << 30
SMALL_COPIES = 8
MAX_PAIRED_ROUNDS = 2000  # rounds of a benchmark with paired calls (they are stored: keep files small)
COMPUTE_BUFFER = 4096  # float32 values the compute probe works on: 16 KiB, in every core's L1


def last_level_cache_bytes() -> int:
    """The L3 size from sysfs (32 MiB if it cannot be read)."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
            text = f.read().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1], 1)
        return int(text.rstrip("KMG")) * scale
    except (OSError, ValueError):
        return 32 << 20


@dataclass
class Workload:
    """Argument tuples to cycle through, and what one call moves."""

    inputs: list[tuple[Any, ...]]
    n_weights: int
    nbytes: int

    def caller(self, fn: Callable[..., Any], *, start: int = 0) -> Callable[[], Any]:
        """A no-argument callable that calls ``fn`` on the next input each time, from input ``start``."""
        it = itertools.cycle(self.inputs[start:] + self.inputs[:start])
        return lambda: fn(*next(it))

    def opposite_caller(self, fn: Callable[..., Any]) -> Callable[[], Any]:
        """:meth:`caller` half a rotation away: called in turn with :meth:`caller`'s callable, each
        reads a copy the other has not just read (and so not just pulled into the cache)."""
        return self.caller(fn, start=len(self.inputs) // 2)


def copies(size: Size, input_bytes: int) -> int:
    """How many copies of an input of ``input_bytes`` to cycle through at ``size``. Large sizes:
    enough to exceed twice the L3, so that every call reads memory (within
    :data:`MAX_ROTATION_BYTES`). Small sizes: a few that fit in a quarter of the L3 together, so
    that the timing averages over several placements of the input in memory (one placement can be
    luckier than another by several percent, from one process to the next)."""
    llc = last_level_cache_bytes()
    input_bytes = max(input_bytes, 1)
    if size.weights < ROTATE_FROM_WEIGHTS:
        return max(1, min(SMALL_COPIES, llc // 4 // input_bytes))
    return max(1, min(math.ceil(2 * llc / input_bytes), MAX_ROTATION_BYTES // input_bytes))


def build(fmt: BlockFormat, op: str, size: Size, *, seed: int = 0) -> Workload:
    """Inputs for ``op`` on ``fmt`` at ``size`` (rows x cols weights), from weight-like values; the
    first argument (the weights or their blocks) is copied for the rotation, the others shared."""
    rng = np.random.default_rng(seed)
    spec = OPS[op]
    args = spec.bench_args(fmt, weight_like(rng, (size.rows, size.cols)), rng)
    n_copies = copies(size, args[0].nbytes)
    inputs = [(args[0].copy(), *args[1:]) for _ in range(n_copies)]
    return Workload(inputs, size.weights, spec.bytes_moved(fmt, size.weights, size.rows))


def probe(size: Size) -> Workload:
    """The bandwidth probe: ``np.copyto`` of as many float32 as the size has weights."""
    src = np.ones(size.weights, dtype=np.float32)
    dst = np.empty_like(src)
    return Workload([(dst, src)], size.weights, 2 * dst.nbytes)


# Cached where the kernels are (compilation.CACHE: off where Numba could write nowhere).
@numba.njit(cache=CACHE)
def _multiply_add(values: np.ndarray, repeats: int) -> float:
    a, b = np.float32(0.999), np.float32(0.001)
    for _ in range(repeats):
        for i in range(values.size):
            values[i] = values[i] * a + b
    return values[0]


def compute_probe(size: Size) -> Callable[[], Any]:
    """The compute probe: one multiply and one add per weight of ``size``, on 16 KiB of float32
    that stay in L1 (vectorised by LLVM, no memory traffic): this session's arithmetic speed. Its
    work depends on the size only, so its times compare from one run (and version) to the next.
    The buffer is 64-byte aligned: with NumPy's 16-byte alignment, some processes' buffers would
    have half their 32-byte accesses split across cache lines, and run slower throughout."""
    spare = np.ones(COMPUTE_BUFFER + 16, dtype=np.float32)
    start = (-spare.ctypes.data % 64) // 4  # 64-byte aligned: no vector load may straddle a cache line
    values = spare[start:start + COMPUTE_BUFFER]
    repeats = max(1, size.weights // COMPUTE_BUFFER)
    return lambda: _multiply_add(values, repeats)


def paired_probes(size: Size) -> dict[str, Callable[[], Any]]:
    """The probes timed in between a kernel's rounds, by name: ``memory`` (np.copyto of the
    size's weights, as :func:`probe`) and ``compute`` (:func:`compute_probe`)."""
    return {"memory": probe(size).caller(np.copyto), "compute": compute_probe(size)}


def _paired_rounds(config, call: Callable[[], Any], interleave: Callable[[], None]) -> int:
    """Rounds that fill pytest-benchmark's --benchmark-max-time (at least --benchmark-min-rounds),
    from the time of one round with its paired calls."""
    start = time.perf_counter()
    interleave()
    call()
    one = max(time.perf_counter() - start, 1e-9)
    max_time = float(config.getoption("benchmark_max_time", 1.0) or 1.0)
    min_rounds = int(config.getoption("benchmark_min_rounds", 5) or 5)
    return max(min_rounds, min(MAX_PAIRED_ROUNDS, math.ceil(max_time / one)))


def measure(benchmark, workload: Workload, fn: Callable[..., Any], info: dict, config, *,
            rounds: int | None = None, paired: dict[str, Callable[[], Any]] | None = None,
            ab: bool = False) -> None:
    """Time ``fn`` on the workload's inputs with pytest-benchmark (its options apply), after two
    untimed calls (the first compiles a Numba kernel, both warm caches), tagged with ``info``, and
    keep the rounds for the table, the stored runs and the gate. ``rounds``: a fixed number of
    one-call rounds instead of pytest-benchmark's calibration (for calls that take seconds).

    ``paired``: no-argument calls timed (with ``time.perf_counter``) in between the rounds, each
    once before every round and once after the last: a kernel round and its neighbours run
    microseconds apart, so whatever the machine did then hits both (see :func:`gate.sandwiched`). The
    rounds then fill --benchmark-max-time, up to MAX_PAIRED_ROUNDS. ``ab``: the paired call is
    the baseline kernel of an A/B comparison."""
    call = workload.caller(fn)
    failure = ""
    try:
        call()
    except Exception as err:  # noqa: BLE001 - one line, not the traceback through the benchmark's code
        failure = (f"{info['impl']} ({info['format']} {info['op']}) raised {type(err).__name__} on its first, "
                   f"untimed call: {str(err).splitlines()[0] if str(err) else ''}; not measured")
    if failure:
        pytest.fail(failure, pytrace=False)
    call()
    benchmark.extra_info.update(info)
    times: dict[str, list[float]] = {name: [] for name in paired or {}}

    def interleave() -> None:
        for name, other in (paired or {}).items():
            start = time.perf_counter()
            other()
            times[name].append(time.perf_counter() - start)

    if paired:
        for other in paired.values():  # compile and warm, untimed
            other()
        n = rounds or _paired_rounds(config, call, interleave)
        for name in times:
            times[name].clear()
        benchmark.pedantic(call, setup=interleave, rounds=n, iterations=1, warmup_rounds=0)
        interleave()
    elif rounds is None:
        benchmark(call)
    else:
        benchmark.pedantic(call, rounds=rounds, iterations=1, warmup_rounds=0)
    record_benchmark(config, benchmark, info, paired=times, ab=ab)


def order_by_pass(items: list) -> None:
    """With --quantbench-passes N, order the items pass by pass (pass 0 of every benchmark: kernels,
    references, probes; then pass 1...), so that each pass has its own probe measured near its kernels.
    A stable sort: everything else keeps its place."""

    def pass_no(item) -> int:
        callspec = getattr(item, "callspec", None)
        return callspec.params.get("qb_pass", 0) if callspec is not None else 0

    items.sort(key=pass_no)
