"""One module per block format. Importing this package imports (and so registers) every one of them.

To add a format, add a module here that declares its block layout, its reference (``*_ref``) and
Numba functions, and calls :func:`quantbench_kernels.registry.register`. Nothing else changes.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
