"""pytest-quantbench: bit-exact conformance and throughput benchmarks for GGUF quantized kernels.

Register kernels with the ``pytest_quantbench_kernels`` hook (return :class:`Kernel` objects) or
the ``quantbench_kernels`` ini option, then run ``pytest --quantbench``.
"""

from .kernel import OPS, Kernel, import_from

__all__ = ["OPS", "Kernel", "import_from"]
