"""pytest-quantbench: bit-exact conformance and throughput benchmarks for GGUF quantized kernels.

Register kernels with the ``pytest_quantbench_kernels`` hook (return :class:`Kernel` objects) or
the ``quantbench_kernels`` ini option, then run ``pytest --quantbench``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .kernel import OPS, Kernel, import_from

__all__ = ["OPS", "Kernel", "import_from"]


def __getattr__(name: str) -> Any:
    # Loaded on first use (PEP 562): .kernel brings in Numba, pytest and Hypothesis (about 0.6 s),
    # which `quantbench inspect` does not need.
    if name in __all__:
        from . import kernel  # noqa: PLC0415

        return getattr(kernel, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
