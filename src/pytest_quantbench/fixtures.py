"""Fixtures for downstream tests: valid quantized blocks, the tensors of GGUF files, a tiny GGUF file.

- ``quant_blocks(qtype, n_blocks, seed=0, kind="random")``: valid raw blocks, uint8
  (n_blocks, block_bytes). ``kind`` is "random" (random quants and scales, finite positive f16
  super-block scales), "weights" (quantized, with the package's quantizer, from float rows shaped
  like transformer weights) or "edge" (zero, -0, subnormal, largest, inf and NaN scales; all-zero
  and all-max quants and scales, in turn).
- ``q2_k_blocks``, ``q4_k_blocks``: 64 "weights" blocks of each.
- ``gguf_tensors``: (name, qtype, shape, raw) for every tensor of the files given with
  ``--quantbench-gguf`` (or the ``quantbench_gguf`` ini option); skips when there are none.
- ``tiny_gguf``: the path of a small GGUF file, written with ``gguf.GGUFWriter``, holding a tensor
  of weight-like values in every weight format of the registry, one in TQ2_0 (a format this
  package does not have), and F16 and F32 tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import gguf
    import numpy as np

# The plugin registers this module in every pytest run: NumPy, gguf-py, the kernels and the
# strategies load when a fixture or function below is first used.

KINDS = ("random", "weights", "edge")


def make_blocks(
    qtype: str | gguf.GGMLQuantizationType, n_blocks: int, *, seed: int = 0, kind: str = "random"
) -> np.ndarray:
    """Valid raw blocks of ``qtype``: uint8 (n_blocks, block_bytes). See the module docstring."""
    import numpy as np

    import quantbench_kernels as qk

    from .strategies import F16_EDGES, F32_EDGES, weight_like

    fmt = qk.get_format(qtype)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    rng = np.random.default_rng(seed)
    if kind == "weights":
        if fmt.reference.quantize is None:
            raise ValueError(f"{fmt.name} has no quantizer to make 'weights' blocks")
        return qk.quantize(weight_like(rng, (n_blocks * fmt.block_weights,)), fmt)
    blocks = np.zeros(n_blocks, dtype=fmt.block_dtype)
    for name in fmt.block_dtype.names:
        dtype = fmt.block_dtype.fields[name][0]
        base = dtype.subdtype[0] if dtype.subdtype else dtype
        shape = (n_blocks,) + (dtype.shape if dtype.subdtype else ())
        if kind == "random":
            if base == np.float16:
                values = rng.uniform(1e-4, 1e-1, size=shape).astype(np.float16)
            elif base.kind == "f":
                values = rng.uniform(1e-4, 1e-1, size=shape).astype(base)
            else:
                info = np.iinfo(base)
                values = rng.integers(info.min, int(info.max) + 1, size=shape, dtype=base)
        elif base == np.float16:
            # Block i takes edge case (i + seed) % 14, so 14 blocks visit every one.
            values = np.array(F16_EDGES, dtype=np.uint16)[(np.arange(n_blocks) + seed) % len(F16_EDGES)]
            values = values.reshape(shape).view(np.float16)
        elif base.kind == "f":
            values = np.array(F32_EDGES, dtype=base)[(np.arange(n_blocks) + seed) % len(F32_EDGES)]
        else:
            info = np.iinfo(base)
            pattern = np.array([info.min, info.max, 0], dtype=base)[(np.arange(n_blocks) + seed) % 3]
            values = np.broadcast_to(pattern.reshape((n_blocks,) + (1,) * (len(shape) - 1)), shape)
        blocks[name] = values
    if fmt.fill_derived is not None:
        fmt.fill_derived(blocks)
    return blocks.view(np.uint8).reshape(n_blocks, fmt.block_bytes)


@pytest.fixture
def quant_blocks() -> Callable[..., np.ndarray]:
    """A factory: ``quant_blocks(qtype, n_blocks, seed=0, kind="random")`` -> uint8 blocks."""
    return make_blocks


@pytest.fixture
def q2_k_blocks() -> np.ndarray:
    """64 Q2_K blocks quantized from weight-like values."""
    return make_blocks("Q2_K", 64, kind="weights")


@pytest.fixture
def q4_k_blocks() -> np.ndarray:
    """64 Q4_K blocks quantized from weight-like values."""
    return make_blocks("Q4_K", 64, kind="weights")


@pytest.fixture
def gguf_tensors(request: pytest.FixtureRequest) -> Iterator[tuple[str, gguf.GGMLQuantizationType, tuple, np.ndarray]]:
    """(name, qtype, shape in weights, raw uint8 (rows, row_bytes)) for every tensor of the GGUF
    files given with --quantbench-gguf or the quantbench_gguf ini option."""
    from . import options
    from .gguf_files import read_tensors

    paths = options.gguf_paths(request.config)
    if not paths:
        pytest.skip("no GGUF files given: pass --quantbench-gguf=PATH or set the quantbench_gguf ini option")
    return ((t.name, t.qtype, t.shape, t.raw) for path in paths for t in read_tensors(path))


def write_tiny_gguf(path: Path, seed: int = 0) -> Path:
    """Write a small GGUF file: a tensor of weight-like values per weight format, one of TQ2_0, F16 and F32."""
    import gguf
    import numpy as np

    import quantbench_kernels as qk

    from .strategies import weight_like

    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_block_count(2)
    writer.add_context_length(128)
    for name, qtype, rows, cols in [
        ("blk.0.attn_output.weight", "Q4_K", 8, 512),
        ("blk.0.ffn_down.weight", "Q2_K", 4, 768),
        ("blk.0.attn_q.weight", "Q4_K", 16, 256),
        ("blk.0.attn_k.weight", "Q3_K", 4, 256),
        ("blk.0.attn_v.weight", "Q5_K", 4, 512),
        ("blk.0.ffn_up.weight", "Q6_K", 8, 256),
        # Rows of 96 and 160 weights: only the 32-weight formats fit them.
        ("blk.1.attn_q.weight", "Q5_0", 8, 160),
        ("blk.1.attn_k.weight", "Q4_0", 4, 96),
        ("blk.1.attn_v.weight", "Q8_0", 4, 96),
        ("blk.1.attn_output.weight", "Q4_1", 4, 160),
        ("blk.1.ffn_gate.weight", "Q5_1", 4, 96),
        ("blk.1.ffn_up.weight", "IQ4_NL", 4, 160),
        ("blk.1.ffn_down.weight", "IQ4_XS", 4, 256),
        ("blk.1.ffn_gate_exps.weight", "MXFP4", 4, 96),
    ]:
        raw = qk.quantize(weight_like(rng, (rows, cols)), qtype)
        writer.add_tensor(name, raw, raw_dtype=qk.get_format(qtype).qtype)  # shape in bytes, as gguf-py wants
    # A format that pytest-quantbench does not have, for the "not checked" path.
    ternary = gguf.quants.quantize(np.sign(weight_like(rng, (2, 256))), gguf.GGMLQuantizationType.TQ2_0)
    writer.add_tensor("blk.1.ffn_up_exps.weight", ternary, raw_dtype=gguf.GGMLQuantizationType.TQ2_0)
    embd = weight_like(rng, (16, 64))
    writer.add_tensor("token_embd.weight", gguf.quants.quantize(embd, gguf.GGMLQuantizationType.Q8_0),
                      raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("output.weight", weight_like(rng, (16, 64)).astype(np.float16))
    writer.add_tensor("blk.0.attn_norm.weight", (1 + weight_like(rng, (64,))).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path: Path) -> Path:
    """Path of a small GGUF file (a tensor of every format, TQ2_0, F16 and F32) in a tmp dir."""
    return write_tiny_gguf(tmp_path / "tiny.gguf")
