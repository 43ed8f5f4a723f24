"""The decode step of a GGUF model: every weight matrix that one generated token multiplies, each
through ``gemv`` once, in its own format.

The matrices are the 2-D ``blk.N.*`` weights and the output head (``output.weight``, or
``token_embd.weight`` when the model ties them). Norms, attention and the activations' own math
are not here: the bytes of the matmuls are what a token costs on a CPU. Float matrices (F32,
F16, BF16) go through NumPy's float32 matvec, converted to float32 once, before any timing. Used by ``quantbench
bench`` and by the decode-step benchmark that ``--quantbench-gguf`` adds.

:func:`llamacpp_step` is the same step through llama.cpp's own kernels (its ``vec_dot`` over rows,
the activation quantized once per matrix, as ggml's matmul does for one token): :func:`measure`
times the two token by token, interleaved, so that what a shared machine does meanwhile hits both.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import gguf
import numpy as np

import quantbench_kernels as qk

from . import llamacpp
from .gguf_files import GGUFFileError, Tensor, read_tensors

LAYER = re.compile(r"^blk\.\d+\.(.+)\.weight$")
DENSE = {gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.BF16}


@dataclass(frozen=True)
class Matmul:
    """One weight matrix of the decode step: its tensor, its kind (``attn_q``, ``ffn_down``,
    ``output``...) and either its quantized weights checked once (``prepared``, a ``qk.Matrix``,
    not checked again on every token) or, for a float matrix, ``dense``: it as float32."""

    tensor: Tensor
    kind: str
    dense: np.ndarray | None = None
    prepared: qk.Matrix | None = None

    @property
    def fmt(self) -> qk.BlockFormat | None:
        """The block format (None for a float matrix)."""
        return self.prepared.fmt if self.prepared is not None else None

    @property
    def weights(self) -> int:
        return self.tensor.shape[0] * self.tensor.shape[1]

    @property
    def type_name(self) -> str:
        return self.fmt.name if self.fmt is not None else self.tensor.qtype.name

    def __call__(self, x: np.ndarray, threads: int | None) -> np.ndarray:
        """This matrix times ``x``: the package's gemv, or NumPy's for a float matrix."""
        if self.prepared is None:
            return self.dense @ x
        return self.prepared(x, threads)


def decode_step(path: str | os.PathLike[str]) -> list[Matmul]:
    """The matrices one token multiplies, in file order. Raises GGUFFileError for an unreadable
    file, a file without such matrices, or one whose matrices have a format without a gemv here
    (naming the tensors and the format)."""
    tensors = read_tensors(path)
    names = {t.name for t in tensors}
    head = "output.weight" if "output.weight" in names else "token_embd.weight"
    chosen = []
    for t in tensors:
        m = LAYER.match(t.name)
        if t.name == head:
            kind = "output" if head == "output.weight" else "output (tied token_embd)"
        elif m and t.raw.ndim == 2 and t.shape[0] > 1:
            kind = m.group(1)
        else:
            continue
        chosen.append((t, kind))
    if not chosen:
        raise GGUFFileError(f"GGUF file {str(path)!r} has no blk.N.*.weight matrices and no output head")
    known = _gemv_formats()
    missing = sorted({t.qtype.name for t, _ in chosen if t.qtype not in known and t.qtype not in DENSE})
    if missing:
        which = [t.name for t, _ in chosen if t.qtype.name in missing]
        raise GGUFFileError(f"GGUF file {str(path)!r}: {len(which)} matrices of the decode step are in formats "
                            f"without a gemv here ({', '.join(missing)}), e.g. {which[0]}")
    return [matmul(t, kind) for t, kind in chosen]


def _gemv_formats() -> dict[gguf.GGMLQuantizationType, qk.BlockFormat]:
    return {f.qtype: f for f in qk.formats("gemv")}


def matmul(t: Tensor, kind: str) -> Matmul:
    """Tensor ``t`` as a matrix of the decode step (a float one converted to float32 once).
    Raises GGUFFileError naming the tensor when its format has no gemv here."""
    known = _gemv_formats()
    if t.qtype in known:
        return Matmul(t, kind, prepared=qk.Matrix(t.raw, known[t.qtype]))
    if t.qtype in DENSE:
        return Matmul(t, kind, dense=t.to_float32())
    raise GGUFFileError(f"tensor {t.name!r} is {t.qtype.name}, a format without a gemv here")


def activations(step: list[Matmul], seed: int = 0) -> dict[int, np.ndarray]:
    """A float32 activation per row width of the step (standard normal, seeded)."""
    rng = np.random.default_rng(seed)
    return {w: rng.standard_normal(w).astype(np.float32) for w in sorted({m.tensor.shape[1] for m in step})}


# A matrix's gemv: (activation, threads) -> float32 (rows,).
Gemv = Callable[[np.ndarray, int | None], np.ndarray]


def llamacpp_step(step: list[Matmul]) -> list[Gemv]:
    """The matrices of ``step`` through llama.cpp's kernels (:mod:`quantbench.llamacpp`), in
    the same order; float matrices through NumPy, as in ``step``. Raises RuntimeError where
    ggml-python is not installed, ValueError naming a format whose dot llama.cpp lacks."""
    if why := llamacpp.unavailable_reason():
        raise RuntimeError(why)
    calls: list[Gemv] = []
    for m in step:
        if m.fmt is None:
            calls.append(m)
            continue
        gemv = llamacpp.kernels(m.fmt.name).gemv
        if gemv is None:
            raise ValueError(f"llama.cpp has no dot product of {m.fmt.name} (tensor {m.tensor.name!r})")
        calls.append(partial(gemv, np.ascontiguousarray(m.tensor.raw)))  # (x, threads) -> gemv(raw, x, threads)
    return calls


def run_once(step: list[Matmul], xs: dict[int, np.ndarray], threads: int | None,
             calls: list[Gemv] | None = None) -> list[float]:
    """One token's matmuls, each matrix once: through this package's gemv, or ``calls[i]`` for
    ``step[i]`` (:func:`llamacpp_step`); the seconds of each call."""
    seconds = []
    for call, m in zip(step if calls is None else calls, step, strict=True):
        start = time.perf_counter()
        call(xs[m.tensor.shape[1]], threads)
        seconds.append(time.perf_counter() - start)
    return seconds


def _totals(step: list[Matmul], per_call: np.ndarray) -> dict[str, Any]:
    """Time per token (median seconds per matrix summed), the bound and rate it gives, and the
    totals by format and by kind."""
    total = float(per_call.sum())
    weights = sum(m.weights for m in step)

    def grouped(key) -> dict[str, dict[str, float]]:  # type: ignore[no-untyped-def]
        out: dict[str, dict[str, float]] = defaultdict(lambda: {"ms": 0.0, "weights": 0, "share": 0.0})
        for m, s in zip(step, per_call, strict=True):
            g = out[key(m)]
            g["ms"] += 1e3 * float(s)
            g["weights"] += m.weights
            g["share"] += float(s) / total
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["ms"]))

    return {
        "ms_per_token": 1e3 * total,
        "tokens_per_s_bound": 1 / total,
        "gweights_per_s": weights / total / 1e9,
        "by_type": grouped(lambda m: m.type_name),
        "by_kind": grouped(lambda m: m.kind),
    }


def slower_than_one_thread(results: list[dict[str, Any]]) -> list[str]:
    """A line for each result on more than one thread (or the automatic choice) whose time per
    token is above the one-thread result's of the same run: a busy neighbour's mark."""
    one = next((r for r in results if r["threads"] == 1), None)
    if one is None:
        return []
    return [f"{r['threads']} threads took {r['ms_per_token']:.2f} ms per token, more than 1 thread's "
            f"{one['ms_per_token']:.2f}: another process is probably using a core (a parallel call waits for "
            "its slowest thread); the automatic choice (--threads auto, and the API's threads=None) measures "
            "this and falls back to one thread" for r in results
            if r["threads"] != 1 and r["ms_per_token"] > one["ms_per_token"]]


def measure(step: list[Matmul], threads: int | None, repeats: int = 7, seed: int = 0,
            against: list[Gemv] | None = None) -> dict[str, Any]:
    """The decode step timed ``repeats`` times after one untimed token (compiles, pages the file
    in): per matrix the median seconds, the totals by format and by kind, each token's milliseconds
    and their interquartile range over the median (``threads`` None: the automatic choice). With ``against``
    (:func:`llamacpp_step`), each timed token of ours is followed by one of theirs; their totals
    are under ``"llamacpp"`` and ``"x_llamacpp"`` is their time per token over ours."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    xs = activations(step, seed)
    sides = [None] if against is None else [None, against]
    times: list[list[list[float]]] = [[] for _ in sides]
    for calls in sides:
        run_once(step, xs, threads, calls)
    for _ in range(repeats):
        for calls, side in zip(sides, times, strict=True):
            side.append(run_once(step, xs, threads, calls))
    ours, *theirs = (_totals(step, np.median(np.array(side), axis=0)) for side in times)
    tokens = 1e3 * np.array(times[0]).sum(axis=1)  # ms of each timed token
    q25, q50, q75 = np.percentile(tokens, [25, 50, 75])
    result = {"threads": "auto" if threads is None else threads, "repeats": repeats, "matrices": len(step),
              "weights": sum(m.weights for m in step), **ours,
              "token_ms": tokens.tolist(), "iqr_over_median": float((q75 - q25) / q50) if q50 > 0 else 0.0}
    if theirs:
        result["llamacpp"] = theirs[0]
        result["x_llamacpp"] = theirs[0]["ms_per_token"] / ours["ms_per_token"]
    return result
