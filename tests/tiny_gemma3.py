"""A tiny Gemma 3 GGUF file made by the tests: random weights in a real model's mix of formats,
a small SentencePiece vocabulary, a sliding window of 4 tokens, so that the forward pass, the
tokenizer, requantize and compare-policies run in CI without the real model.

Shapes: 6 layers (layer 5 attends globally, as in Gemma 3's pattern), width 256, 2 query heads
and 1 KV head of 128, FFN 384 (so ffn_down's rows of 384 weights cannot hold a 256-weight block:
a policy that asks for a k-quant there falls back).
"""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np

import quantbench_kernels as qk

N_LAYER, N_EMBD, N_FF, N_HEAD, N_HEAD_KV, HEAD_DIM, WINDOW = 6, 256, 384, 2, 1, 128, 4
SPECIALS = [("<pad>", 3), ("<eos>", 3), ("<bos>", 3), ("<unk>", 2), ("\n", 4), ("<b>", 4), ("<start_of_turn>", 3)]
PIECES = ["\u2581", "\u2581t", "he", "\u2581the", "\u2581a", "in", "\u2581in", "er", "an", "on", "\u2581c", "at",
          "\u2581cat", "\u2581sat", "\u2581on", "\u2581mat", "ab", "bc", "aa", "e", "t", "a", "h", "s", "c", "m", "o",
          "n", "r", "i", "b"]
# Matrices: (name, rows, row weights, type as "shipped").
MATRICES = [("attn_q", N_HEAD * HEAD_DIM, N_EMBD, "Q4_K"), ("attn_k", N_HEAD_KV * HEAD_DIM, N_EMBD, "Q5_0"),
            ("attn_v", N_HEAD_KV * HEAD_DIM, N_EMBD, "Q8_0"), ("attn_output", N_EMBD, N_HEAD * HEAD_DIM, "Q6_K"),
            ("ffn_gate", N_FF, N_EMBD, "Q5_0"), ("ffn_up", N_FF, N_EMBD, "Q4_K"), ("ffn_down", N_EMBD, N_FF, "Q8_0")]
NORMS = [("attn_norm", N_EMBD), ("attn_q_norm", HEAD_DIM), ("attn_k_norm", HEAD_DIM), ("post_attention_norm", N_EMBD),
         ("ffn_norm", N_EMBD), ("post_ffw_norm", N_EMBD)]


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and types: the specials, 256 byte tokens, then pieces scored by rank."""
    tokens = [t for t, _ in SPECIALS] + [f"<0x{b:02X}>" for b in range(256)] + PIECES
    types = [k for _, k in SPECIALS] + [6] * 256 + [1] * len(PIECES)
    scores = [0.0] * (len(SPECIALS) + 256) + [-float(i) for i in range(len(PIECES))]
    scores[tokens.index("bc")] = scores[tokens.index("ab")] + 0.5  # "abc" merges b+c first
    return tokens, scores, types


def write(path: str | Path, seed: int = 0, alignment: int | None = None) -> Path:
    """Write the tiny model to ``path`` (tensor data aligned to ``alignment`` bytes, written as
    ``general.alignment``, when given); returns it."""
    rng = np.random.default_rng(seed)
    tokens, scores, types = vocabulary()
    w = gguf.GGUFWriter(str(path), "gemma3")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    w.add_name("tiny gemma3 (tests)")
    w.add_block_count(N_LAYER)
    w.add_context_length(64)
    w.add_embedding_length(N_EMBD)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD_KV)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1e6)
    w.add_sliding_window(WINDOW)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(False)

    def matrix(name: str, rows: int, cols: int, qtype: str) -> None:
        x = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        w.add_tensor(name, qk.quantize(x, qtype), raw_dtype=gguf.GGMLQuantizationType[qtype])

    w.add_tensor("output_norm.weight", (1 + 0.1 * rng.standard_normal(N_EMBD)).astype(np.float32))
    matrix("token_embd.weight", len(tokens), N_EMBD, "Q8_0")
    for i in range(N_LAYER):
        for name, n in NORMS:
            w.add_tensor(f"blk.{i}.{name}.weight", (1 + 0.1 * rng.standard_normal(n)).astype(np.float32))
        for name, rows, cols, qtype in MATRICES:
            matrix(f"blk.{i}.{name}.weight", rows, cols, qtype)
    return finish(w, path)


def finish(w: gguf.GGUFWriter, path: str | Path) -> Path:
    """Write what ``w`` holds (header, metadata, tensors) to ``path``; returns it."""
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def with_architecture(src: Path, dst: Path, arch: str) -> Path:
    """A copy of the tiny model whose ``general.architecture`` says ``arch`` (6 characters, as
    "gemma3", so that every offset stays put); returns ``dst``."""
    assert len(arch) == 6
    data = src.read_bytes()
    at = data.index(b"gemma3")  # general.architecture's value, the first "gemma3" of the header
    dst.write_bytes(data[:at] + arch.encode() + data[at + 6:])
    return dst


def with_metadata(src: Path, dst: Path, key: str, value: float) -> Path:
    """A copy of the tiny model whose metadata ``key`` (a uint32 or float32 value) holds ``value``
    instead, patched in place (every offset stays put); returns ``dst``."""
    data = bytearray(src.read_bytes())
    name = key.encode()
    at = data.index(len(name).to_bytes(8, "little") + name) + 8 + len(name)
    vtype = int.from_bytes(data[at:at + 4], "little")
    fmt = {gguf.GGUFValueType.UINT32: "<I", gguf.GGUFValueType.FLOAT32: "<f"}[gguf.GGUFValueType(vtype)]
    struct.pack_into(fmt, data, at + 4, value)
    dst.write_bytes(bytes(data))
    return dst
