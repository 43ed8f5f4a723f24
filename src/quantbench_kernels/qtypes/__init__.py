"""One module per block format. Importing this package imports every one of them.

To add a format, add a module here that declares its block layout, its reference (``*_ref``), its
Numba block kernels and its ``FORMAT`` (:class:`quantbench_kernels.registry.BlockFormat`, with the
``loops`` around the block kernels: :class:`quantbench_kernels.compilation.Loops`), then run
``python tools/generate_loops.py``: it writes the loops into :mod:`quantbench_kernels.loops`, which
registers the format. Nothing else changes.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
