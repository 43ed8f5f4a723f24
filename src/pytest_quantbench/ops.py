"""The one table of ops: everything the plugin knows about dequantize, quantize, vec_dot and gemv.

For each op: the format capability it needs (a field of the registry's ``Ops``), the
``quantbench_kernels`` function that computes it (a kernel has that function's signature without
``qtype`` and ``backend``), how Hypothesis draws its inputs, how its inputs are made from a real
GGUF tensor, the arguments of its benchmark, the bytes one call must move, and its conformance
check. Kernels, strategies, workloads, the table and the suite read this table; nothing else
branches on an op's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

import quantbench_kernels as qk
from quantbench_kernels import BlockFormat

from . import conformance
from . import strategies as qst

Args = tuple[Any, ...]


@dataclass(frozen=True)
class Op:
    """One op: the capability it needs, what computes it, and how it is drawn, built, sized and checked."""

    name: str
    args: tuple[str, ...]  # the names of a kernel's arguments, as its failures name them
    needs: str  # the registry capability (a field of quantbench_kernels.Ops) both backends must have
    api: Callable[..., Any]  # api(*args, qtype, backend=...)
    # Hypothesis inputs, edge cases weighted: draw(fmt, extreme) (extreme: whether blocks may have
    # extreme f16 scales, registration.Kernel.extreme_scales)
    draw: Callable[[BlockFormat, bool], st.SearchStrategy[Args]]
    from_tensor: Callable[[BlockFormat, np.ndarray], Args]  # inputs from a tensor's uint8 (rows, row_bytes)
    bench_args: Callable[[BlockFormat, np.ndarray, np.random.Generator], Args]  # from float32 (rows, cols)
    bytes_moved: Callable[[BlockFormat, int, int], int]  # (fmt, weights, rows) -> bytes one call moves
    check: Callable[..., None]  # check(kernel, fmt, *args): raises ConformanceError
    # The paired probe(s) the gate divides by, by the op's character: "memory" (dequantize moves
    # bytes), "compute" (quantize and the dots do arithmetic) or "both" (gate.PROBES). In the
    # calibration (docs/gate.md) this held on a quiet and on a busy machine; "both" did better on
    # the quiet one and much worse on the busy one.
    probe: str
    # Whether a kernel's output must be bit-identical unless it declares a lower precision or a
    # tolerance (dequantize, quantize), or else is held to the rounding bound of the float
    # reduction (the dot products; pytest_quantbench.conformance.dot_bound).
    exact_by_default: bool
    # Whether the op writes blocks (the quantizers): checked byte for byte, whatever a kernel
    # declares, and its NumPy reference too slow to time above a million weights.
    bytes_out: bool = False
    # Whether the op is a dot product (a kernel may declare the activation it multiplies by).
    dot: bool = False
    # Whether its input is one row (vec_dot): a fixed shape's first row only.
    one_row: bool = False

    def supported_by(self, fmt: BlockFormat) -> bool:
        """Whether ``fmt`` has this op in both backends (a reference to check a kernel against)."""
        return fmt.supports(self.needs)

    def reference(self, fmt: BlockFormat) -> Callable[..., Any]:
        """The NumPy reference of this op on ``fmt``, with the kernel signature."""
        return lambda *args: self.api(*args, fmt, backend="reference")

    def builtin(self, fmt: BlockFormat) -> Callable[..., Any]:
        """The package's Numba kernel of this op on ``fmt``, with the kernel signature."""
        return lambda *args: self.api(*args, fmt, backend="numba")


def _packed_bytes(fmt: BlockFormat, n_weights: int) -> int:
    return n_weights * fmt.block_bytes // fmt.block_weights


def _convert_bytes(fmt: BlockFormat, n_weights: int, rows: int) -> int:
    """Blocks one way, float32 the other (dequantize, quantize)."""
    return _packed_bytes(fmt, n_weights) + 4 * n_weights


def _dot_bytes(fmt: BlockFormat, n_weights: int, rows: int) -> int:
    """The blocks and the float32 activation of one row in, one float32 per row out."""
    return _packed_bytes(fmt, n_weights) + 4 * (n_weights // rows) + 4 * rows


def _random_x(fmt: BlockFormat, raw: np.ndarray) -> np.ndarray:
    """A fixed float32 activation for a row of ``raw``'s blocks (uint8 (rows, row_bytes))."""
    n = raw.shape[-1] // fmt.block_bytes * fmt.block_weights
    return np.random.default_rng(0).standard_normal(n).astype(np.float32)


MAX_TENSOR_ROWS_TO_QUANTIZE = 64  # the reference quantizer is slow: a tensor's first rows suffice


def quantize_imatrix(x: np.ndarray, imatrix: np.ndarray, qtype: Any, backend: str = "numba") -> np.ndarray:
    """``quantbench_kernels.quantize`` with an importance matrix: uint8 (rows, row_bytes)."""
    return qk.quantize(x, qtype, imatrix=imatrix, backend=backend)


def _importance(n: int) -> np.ndarray:
    """A fixed, llama-imatrix-like importance for rows of ``n`` weights (seeded)."""
    return (np.random.default_rng(0).gamma(0.5, size=n) * 1e-3).astype(np.float32)


def _rows_of(fmt: BlockFormat, raw: np.ndarray) -> np.ndarray:
    """A tensor's first rows (uint8 (rows, row_bytes)) decoded: float32 (rows, n_per_row)."""
    return qk.dequantize(raw[:MAX_TENSOR_ROWS_TO_QUANTIZE], fmt, backend="reference")


def _imatrix_from_tensor(fmt: BlockFormat, raw: np.ndarray) -> Args:
    """A tensor's first rows decoded, and a fixed importance for their row length."""
    rows = _rows_of(fmt, raw)
    return rows, _importance(rows.shape[1])


OPS: dict[str, Op] = {
    op.name: op
    for op in [
        Op(
            name="dequantize",
            args=("raw",),
            needs="dequantize",
            api=qk.dequantize,
            draw=lambda fmt, extreme: st.tuples(qst.blocks(fmt, n_blocks=st.integers(1, 4), extreme=extreme)),
            from_tensor=lambda fmt, raw: (raw.reshape(-1, fmt.block_bytes),),
            bench_args=lambda fmt, dense, rng: (qk.quantize(dense, fmt).reshape(-1, fmt.block_bytes),),
            bytes_moved=_convert_bytes,
            check=conformance.check_dequantize,
            probe="memory",
            exact_by_default=True,
        ),
        Op(
            name="quantize",
            args=("x",),
            needs="quantize",
            api=qk.quantize,
            draw=lambda fmt, extreme: st.tuples(qst.float_rows(fmt, n_blocks=st.integers(1, 3))),
            from_tensor=lambda fmt, raw: (_rows_of(fmt, raw).reshape(-1),),
            bench_args=lambda fmt, dense, rng: (dense.reshape(-1),),
            bytes_moved=_convert_bytes,
            check=conformance.check_quantize,
            probe="compute",
            exact_by_default=True,
            bytes_out=True,
        ),
        Op(
            name="quantize_imatrix",
            args=("x", "imatrix"),
            needs="quantize_imatrix",
            api=quantize_imatrix,
            draw=lambda fmt, extreme: qst.imatrix_args(fmt),
            from_tensor=_imatrix_from_tensor,
            bench_args=lambda fmt, dense, rng: (dense, _importance(dense.shape[1])),
            bytes_moved=_convert_bytes,
            check=conformance.check_quantize_imatrix,
            probe="compute",
            exact_by_default=True,
            bytes_out=True,
        ),
        Op(
            name="vec_dot",
            args=("w", "x"),
            needs="gemv",  # a one-row gemv
            api=qk.vec_dot,
            draw=qst.vec_dot_args,
            from_tensor=lambda fmt, raw: (raw[0].reshape(-1, fmt.block_bytes), _random_x(fmt, raw)),
            bench_args=lambda fmt, dense, rng: (qk.quantize(dense, fmt).reshape(-1, fmt.block_bytes),
                                                rng.standard_normal(dense.size).astype(np.float32)),
            bytes_moved=lambda fmt, n_weights, rows: _dot_bytes(fmt, n_weights, 1),
            check=conformance.check_vec_dot,
            probe="compute",
            exact_by_default=False,
            dot=True,
            one_row=True,
        ),
        Op(
            name="gemv",
            args=("w", "x"),
            needs="gemv",
            api=qk.gemv,
            draw=qst.gemv_args,
            from_tensor=lambda fmt, raw: (raw, _random_x(fmt, raw)),
            bench_args=lambda fmt, dense, rng: (qk.quantize(dense, fmt),
                                                rng.standard_normal(dense.shape[1]).astype(np.float32)),
            bytes_moved=_dot_bytes,
            check=conformance.check_gemv,
            probe="compute",
            exact_by_default=False,
            dot=True,
        ),
    ]
}
