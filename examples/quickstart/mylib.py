"""A kernel author's library, as small as it gets: NumPy dequantizers of two 32-weight formats."""

import numpy as np


def dequantize_q8_0(raw: np.ndarray) -> np.ndarray:
    """Q8_0 blocks, uint8 (n_blocks, 34): f16 d, then 32 int8 quants. Weights: d * q, float32 (n_blocks, 32)."""
    d = raw[:, :2].copy().view(np.float16).astype(np.float32)
    q = raw[:, 2:].view(np.int8).astype(np.float32)
    with np.errstate(invalid="ignore"):  # an inf scale times a zero quant is NaN, as in C
        return d * q


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 blocks, uint8 (n_blocks, 18): f16 d, then 16 bytes of nibbles (weight j in the low nibble
    of byte j, weight j + 16 in its high nibble). Weights: d * (q - 8), float32 (n_blocks, 32)."""
    d = raw[:, :2].copy().view(np.float16).astype(np.float32)
    qs = raw[:, 2:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.int8) - np.int8(8)
    with np.errstate(invalid="ignore"):  # an inf scale times a zero quant is NaN, as in C
        return d * q.astype(np.float32)
