"""A reference forward pass of Gemma 3 (``general.architecture = "gemma3"``) in NumPy, with this
package's gemv for every weight matrix, decoding token by token with a KV cache.

It follows llama.cpp's graph for the architecture (``llm_build_gemma3``) and its hyperparameters
(read from the file's metadata; the sliding-window RoPE base, 10000, and the pattern of five
sliding-window layers to one global layer are llama.cpp's constants for Gemma 3). Per token::

    x = embedding(token) * sqrt(n_embd)
    per layer:  h = rms(x) * attn_norm
                q, k, v = Wq h, Wk h, Wv h                      (gemv: activation quantized as ggml does)
                q, k = rope(rms_per_head(q) * q_norm), rope(rms_per_head(k) * k_norm)   (NeoX pairs)
                a = softmax(q * scale . K) . V                  (K, V cached in float16, as llama.cpp's
                                                                 default cache; a sliding-window layer
                                                                 sees the last ``sliding_window`` keys)
                x = x + rms(Wo a) * post_attention_norm
                h = rms(x) * ffn_norm
                x = x + rms(Wdown (gelu(Wgate h) * Wup h)) * post_ffw_norm
    logits = Wout (rms(x) * output_norm)                        (Wout: token_embd when tied)

Where llama.cpp's CPU backend rounds, this rounds the same way: queries and attention weights to
float16 before their products with the float16 cache, GELU through float16 (ggml's table). What it
cannot reproduce is the order of float sums inside ggml's SIMD loops and batched matmuls, so its
logits agree with llama.cpp's to a tolerance (tests/test_gemma3.py states it), not bit for bit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

import quantbench_kernels as qk

from .decode_step import Matmul, matmul
from .gguf_files import GGUFFileError, Tensor, read_file_header, read_tensors

ARCH = "gemma3"
# llama.cpp's constants for Gemma 3 (llama-model.cpp): every sixth layer attends globally.
SWA_PATTERN = 6
SWA_ROPE_BASE = 10000.0


@dataclass(frozen=True)
class Config:
    """Gemma 3's hyperparameters, from ``gemma3.*`` metadata."""

    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    eps: float
    rope_base: float
    sliding_window: int
    final_softcap: float
    context_length: int

    @classmethod
    def from_metadata(cls, m: dict[str, Any], path: str) -> Config:
        """Raises GGUFFileError naming the file and the first missing key, or the first value that
        is out of its range (counts below 1, an epsilon or RoPE base that is not a positive
        number, query heads that the key/value heads do not divide)."""
        if m.get("general.architecture") != ARCH:
            raise GGUFFileError(f"GGUF file {path!r} is a {m.get('general.architecture')!r} model; the forward pass "
                                f"here is for {ARCH!r}")

        def get(key: str, default: Any = None) -> Any:
            value = m.get(f"{ARCH}.{key}", default)
            if value is None:
                raise GGUFFileError(f"GGUF file {path!r} lacks the metadata {ARCH}.{key}")
            return value

        def number(key: str, kind: type, default: Any = None, positive: bool = True) -> Any:
            """The value of ``key``: a finite ``kind`` (int: a whole number), above 0 if ``positive``
            else at least 0. Tampered metadata would otherwise divide by zero or compute NaN far
            from here."""
            value = get(key, default)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (kind is float or float(value).is_integer()) and (value > 0 if positive else value >= 0)
            if not ok:
                rule = f"{'a positive' if positive else 'a non-negative'} {'whole ' if kind is int else ''}number"
                raise GGUFFileError(f"GGUF file {path!r}: the metadata {ARCH}.{key} is {value!r}, not {rule}")
            return kind(value)

        n_head = number("attention.head_count", int)
        config = cls(
            n_layer=number("block_count", int),
            n_embd=number("embedding_length", int),
            n_head=n_head,
            n_head_kv=number("attention.head_count_kv", int, n_head),
            head_dim=number("attention.key_length", int),
            eps=number("attention.layer_norm_rms_epsilon", float),
            rope_base=number("rope.freq_base", float, 10000.0),
            sliding_window=number("attention.sliding_window", int, 0, positive=False),
            final_softcap=number("final_logit_softcapping", float, 0.0, positive=False),
            context_length=number("context_length", int),
        )
        if config.n_head % config.n_head_kv:
            raise GGUFFileError(f"GGUF file {path!r}: {ARCH}.attention.head_count ({config.n_head}) is not a "
                                f"multiple of {ARCH}.attention.head_count_kv ({config.n_head_kv})")
        return config

    def is_global(self, layer: int) -> bool:
        """Whether ``layer`` attends to every earlier token (else to the last ``sliding_window``)."""
        return self.sliding_window <= 0 or layer % SWA_PATTERN == SWA_PATTERN - 1

    @property
    def attention_scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """ggml's RMS norm over the last axis, times ``weight``: float32 squares summed in double, the
    mean and the scale in float32."""
    mean = (np.sum(np.square(x), axis=-1, keepdims=True, dtype=np.float64) / x.shape[-1]).astype(np.float32)
    return (x * (np.float32(1) / np.sqrt(mean + np.float32(eps)))) * weight


def gelu(x: np.ndarray) -> np.ndarray:
    """ggml's GELU (tanh form) as its CPU backend computes it: through a float16 table, so the
    input and the output are rounded to float16; 0 below -10 and x above 10."""
    h = x.astype(np.float16).astype(np.float32)
    y = (0.5 * h * (1.0 + np.tanh(np.float32(math.sqrt(2 / math.pi)) * h * (1.0 + np.float32(0.044715) * h * h))))
    y = y.astype(np.float16).astype(np.float32)
    return np.where(x <= -10.0, np.float32(0), np.where(x >= 10.0, x, y)).astype(np.float32)


def rotation(pos: int, base: float, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin (float32, head_dim / 2 each) of NeoX RoPE's angles pos * base^(-2i/head_dim)."""
    theta = pos * base ** (-np.arange(head_dim // 2, dtype=np.float64) * 2 / head_dim)
    return np.cos(theta).astype(np.float32), np.sin(theta).astype(np.float32)


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """NeoX-style rotary embedding of (heads, head_dim): pairs (i, i + d/2) rotated by the angles
    whose cos and sin are given (:func:`rotation`)."""
    half = x.shape[-1] // 2
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


@dataclass
class Layer:
    wq: Matmul
    wk: Matmul
    wv: Matmul
    wo: Matmul
    w_gate: Matmul
    w_up: Matmul
    w_down: Matmul
    attn_norm: np.ndarray
    q_norm: np.ndarray
    k_norm: np.ndarray
    post_attn_norm: np.ndarray
    ffn_norm: np.ndarray
    post_ffw_norm: np.ndarray


class Gemma3:
    """A Gemma 3 GGUF file, ready to decode: ``step(token)`` appends one token and returns the
    next-token logits (float32, one per vocabulary entry). ``context`` bounds the KV cache
    (tokens). ``threads`` goes to every gemv (None: the kernels pick)."""

    def __init__(self, path: str | os.PathLike[str], *, context: int = 2048, threads: int | None = None) -> None:
        name = str(path)
        header = read_file_header(path)
        self.config = c = Config.from_metadata(header.metadata, name)
        tensors = {t.name: t for t in read_tensors(path)}

        def need(key: str) -> Tensor:
            if key not in tensors:
                raise GGUFFileError(f"GGUF file {name!r} lacks the tensor {key!r} of a Gemma 3 model")
            return tensors[key]

        def mat(key: str) -> Matmul:
            return matmul(need(key), key)

        self.layers = [
            Layer(*(mat(f"blk.{i}.{k}.weight") for k in
                    ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")),
                  *(need(f"blk.{i}.{k}.weight").to_float32().reshape(-1) for k in
                    ("attn_norm", "attn_q_norm", "attn_k_norm", "post_attention_norm", "ffn_norm", "post_ffw_norm")))
            for i in range(c.n_layer)]
        self.embedding = need("token_embd.weight")
        self.output = mat("output.weight" if "output.weight" in tensors else "token_embd.weight")
        self.output_norm = need("output_norm.weight").to_float32().reshape(-1)
        self.vocab = self.embedding.shape[0]
        if self.layers[0].wq.tensor.shape != (c.n_head * c.head_dim, c.n_embd):
            raise GGUFFileError(f"GGUF file {name!r}: blk.0.attn_q.weight is {self.layers[0].wq.tensor.shape}, not "
                                f"{(c.n_head * c.head_dim, c.n_embd)} as its metadata says")
        if not 1 <= context <= c.context_length:
            raise ValueError(f"context must be 1 to {c.context_length} tokens (the model's context_length), "
                             f"got {context}")
        self.context = context
        self.threads = threads
        kv = (c.n_layer, context, c.n_head_kv, c.head_dim)
        # The cache holds float16 values (llama.cpp's default cache type), kept as float32 so that
        # attention does not convert the whole cache on every token.
        self.keys = np.zeros(kv, np.float32)
        self.values = np.zeros(kv, np.float32)
        self.pos = 0

    def reset(self) -> None:
        """Forget every token: the next ``step`` is at position 0."""
        self.pos = 0

    def embed(self, token: int) -> np.ndarray:
        """Token ``token``'s row of the embedding table, as float32."""
        if not 0 <= token < self.vocab:
            raise ValueError(f"token id {token} is outside the vocabulary (0 to {self.vocab - 1})")
        row = np.asarray(self.embedding.raw[token])
        return qk.dequantize(row, self.embedding.qtype.name).reshape(-1)

    def step(self, token: int) -> np.ndarray:
        """Append ``token`` at the next position; the logits for the token after it."""
        c, pos = self.config, self.pos
        if pos >= self.context:
            raise ValueError(f"the KV cache holds {self.context} tokens; start again (reset) or give a larger context")
        x = self.embed(token) * np.float32(math.sqrt(c.n_embd))
        group = c.n_head // c.n_head_kv
        rotations = {base: rotation(pos, base, c.head_dim) for base in {c.rope_base, SWA_ROPE_BASE}}
        for i, ly in enumerate(self.layers):
            h = rms_norm(x, ly.attn_norm, c.eps)
            q = ly.wq(h, self.threads).reshape(c.n_head, c.head_dim)
            k = ly.wk(h, self.threads).reshape(c.n_head_kv, c.head_dim)
            v = ly.wv(h, self.threads).reshape(c.n_head_kv, c.head_dim)
            cos, sin = rotations[c.rope_base if c.is_global(i) else SWA_ROPE_BASE]
            q = rope(rms_norm(q, ly.q_norm, c.eps), cos, sin) * np.float32(c.attention_scale)
            k = rope(rms_norm(k, ly.k_norm, c.eps), cos, sin)
            self.keys[i, pos] = k.astype(np.float16)
            self.values[i, pos] = v.astype(np.float16)
            first = 0 if c.is_global(i) else max(0, pos + 1 - c.sliding_window)
            keys = self.keys[i, first:pos + 1]      # (t, kv_heads, d)
            values = self.values[i, first:pos + 1]
            q16 = q.astype(np.float16).astype(np.float32).reshape(c.n_head_kv, group, c.head_dim)
            scores = np.einsum("hgd,thd->hgt", q16, keys)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            p = (scores / scores.sum(axis=-1, keepdims=True)).astype(np.float16).astype(np.float32)
            a = np.einsum("hgt,thd->hgd", p, values).reshape(-1)
            x = x + rms_norm(ly.wo(a, self.threads), ly.post_attn_norm, c.eps)
            h = rms_norm(x, ly.ffn_norm, c.eps)
            f = gelu(ly.w_gate(h, self.threads)) * ly.w_up(h, self.threads)
            x = x + rms_norm(ly.w_down(f, self.threads), ly.post_ffw_norm, c.eps)
        logits = self.output(rms_norm(x, self.output_norm, c.eps), self.threads)
        if c.final_softcap:
            logits = np.tanh(logits / np.float32(c.final_softcap)) * np.float32(c.final_softcap)
        self.pos += 1
        return logits.astype(np.float32, copy=False)

    def generate(self, prompt: list[int], n: int) -> tuple[list[int], list[np.ndarray]]:
        """Greedy decoding from the start: ``prompt`` then ``n`` tokens, each the argmax of the
        logits (the lowest id on a tie, as llama.cpp's greedy sampler). Returns the new tokens
        and the logits that chose each."""
        if not prompt:
            raise ValueError("the prompt is empty: give at least one token (e.g. <bos>)")
        self.reset()
        for t in prompt:
            logits = self.step(t)
        tokens, chosen = [], []
        for _ in range(n):
            chosen.append(logits)
            tokens.append(int(np.argmax(logits)))
            if len(tokens) < n:
                logits = self.step(tokens[-1])
        return tokens, chosen
