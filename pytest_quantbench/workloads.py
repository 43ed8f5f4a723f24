"""Benchmark inputs: weight-like data of each op's shape at each size, rotated past the last-level
cache at large sizes so that every timed call reads its input from memory, as in real use."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import quantbench_kernels as qk
from quantbench_kernels import BlockFormat

from .options import Size
from .strategies import weight_like
from .throughput import bytes_moved

ROTATE_FROM_WEIGHTS = 4 << 20  # sizes from 4M weights up are "large": their inputs rotate
MAX_COPIES = 16
SMALL_COPIES = 8


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

    def caller(self, fn: Callable[..., Any]) -> Callable[[], Any]:
        """A no-argument callable that calls ``fn`` on the next input each time."""
        it = itertools.cycle(self.inputs)
        return lambda: fn(*next(it))


def _copies(size: Size, input_bytes: int) -> int:
    """How many copies of the input to cycle through. Large sizes: enough to exceed twice the L3,
    so that every call reads memory. Small sizes: a few that fit in a quarter of the L3 together,
    so that the timing averages over several placements of the input in memory (one placement
    can be luckier than another by several percent, from one process to the next)."""
    llc = last_level_cache_bytes()
    if size.weights < ROTATE_FROM_WEIGHTS:
        return max(1, min(SMALL_COPIES, llc // 4 // max(input_bytes, 1)))
    return max(1, min(MAX_COPIES, math.ceil(2 * llc / max(input_bytes, 1))))


def build(fmt: BlockFormat, op: str, size: Size, seed: int = 0) -> Workload:
    """Inputs for ``op`` on ``fmt`` at ``size`` (rows x cols weights)."""
    rng = np.random.default_rng(seed)
    dense = weight_like(rng, (size.rows, size.cols))
    if op == "quantize":
        x = dense.reshape(-1)
        return Workload([(x.copy(),) for _ in range(_copies(size, x.nbytes))], size.weights,
                        bytes_moved(op, fmt, size.weights))
    raw = qk.quantize(dense, fmt)
    x = rng.standard_normal(size.cols).astype(np.float32)
    if op == "dequantize":
        args: tuple[Any, ...] = (raw.reshape(-1, fmt.block_bytes),)
    elif op == "gemv":
        args = (raw, x)
    elif op == "vec_dot":
        args = (raw.reshape(-1, fmt.block_bytes), rng.standard_normal(size.weights).astype(np.float32))
    else:
        raise ValueError(f"unknown op {op!r}")
    n_copies = _copies(size, raw.nbytes)
    inputs = [tuple(a.copy() if i == 0 else a for i, a in enumerate(args)) for _ in range(n_copies)]
    rows = size.rows if op == "gemv" else 1
    return Workload(inputs, size.weights, bytes_moved(op, fmt, size.weights, rows))


def probe(size: Size) -> Workload:
    """The bandwidth probe: ``np.copyto`` of as many float32 as the size has weights."""
    src = np.ones(size.weights, dtype=np.float32)
    dst = np.empty_like(src)
    return Workload([(dst, src)], size.weights, 2 * dst.nbytes)


def reference_fn(fmt: BlockFormat, op: str) -> Callable[..., Any]:
    """The NumPy reference of ``op`` with the kernel signature."""
    fn = getattr(qk, op)
    return lambda *args: fn(*args, fmt, backend="reference")


def order_by_pass(items: list) -> None:
    """With --quantbench-windows N, order the items pass by pass (pass 0 of every benchmark: kernels,
    references, probes; then pass 1...), so that each pass has its own probe measured near its kernels.
    A stable sort: everything else keeps its place."""

    def window(item) -> int:
        callspec = getattr(item, "callspec", None)
        return callspec.params.get("qb_window", 0) if callspec is not None else 0

    items.sort(key=window)
