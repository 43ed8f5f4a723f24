"""Kernels as downstream projects write them, right and wrong: the conformance tests' subjects,
shared by the tests that call the checks directly (test_kernel_declarations.py) and the throwaway
downstream projects that register them (downstream.py's conftest, test_downstream_gallery.py's),
which import this module from the tests folder."""

from __future__ import annotations

from collections.abc import Callable

import gguf
import numpy as np

import quantbench_kernels as qk
from quantbench_kernels.qtypes import q6_k


def float_gemv(name: str, dtype: type = np.float32) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The PyTorch / GPU path: gguf-py's dequantized weights times x in ``dtype`` (torch.mv's CPU
    sgemv), as float32."""
    qtype = qk.get_format(name).qtype
    return lambda w, x: (gguf.quants.dequantize(np.asarray(w), qtype).astype(dtype) @ x.astype(dtype)).astype(
        np.float32)


def zero_past_1024(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A Q4_0 gemv with a shape bug: rows from 1024 on are never computed."""
    out = qk.gemv(w, x, "Q4_0")
    out[1024:] = 0
    return out


def wide_rows_wrong(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A Q4_0 gemv with a wrong quant that only a row of 4096 weights reaches (block 100)."""
    if w.shape[1] >= 4096 // 32 * 18:
        w = np.array(w)
        w[:, 100 * 18 + 2] ^= 1
    return qk.gemv(w, x, "Q4_0")


def halves_x(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A right Q4_K gemv that halves its caller's x in place afterwards."""
    y = qk.gemv(w, x, "Q4_K")
    x *= 0.5
    return y


def zeroes_blocks(raw: np.ndarray) -> np.ndarray:
    """A right Q4_K dequantizer that zeroes its caller's blocks afterwards."""
    out = qk.dequantize(raw, "Q4_K", backend="reference")
    raw[:] = 0
    return out


_NOISE = np.random.default_rng()


def noisy(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A Q4_K gemv adding 1e-7 relative noise: within the rounding bound, never the same twice."""
    y = qk.gemv(w, x, "Q4_K")
    return (y * (1 + 1e-7 * _NOISE.standard_normal(y.shape))).astype(np.float32)


def half_q6_k(raw: np.ndarray) -> np.ndarray:
    """A Q6_K dequantizer computing in float16, d x sc first (as a GPU kernel may)."""
    b = raw.view(q6_k.BLOCK_DTYPE)[:, 0]
    d = b["d"][:, None] * b["scales"].astype(np.float16)
    q = q6_k.unpack_quants_ref(b["ql"], b["qh"]).astype(np.float16) - np.float16(32)
    return (d[..., None] * q.reshape(-1, 16, 16)).reshape(-1, 256)


def huge_scale_q6_k_block() -> np.ndarray:
    """One Q6_K block with d = 65504 (float16's largest), sub-scales 2 and every quant 0 (32 - 32):
    each weight is 0, but d x sc passes float16's range on the way. uint8 (1, 210)."""
    b = np.zeros(1, dtype=q6_k.BLOCK_DTYPE)
    b["d"] = 65504.0
    b["scales"] = 2
    b["ql"], b["qh"] = q6_k.pack_quants_ref(np.full((1, 256), 32, np.uint8))
    return b.view(np.uint8).reshape(1, -1)
