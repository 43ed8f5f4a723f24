"""pytest-quantbench: bit-exact conformance and throughput benchmarks for GGUF quantized kernels.

Register kernels with the ``pytest_quantbench_kernels`` hook (return :class:`Kernel` objects) or
the ``quantbench_kernels`` ini option, then run ``pytest --quantbench``.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: pytest imports this package in every run
if TYPE_CHECKING:
    from typing import Any

    from .registration import OPS, Kernel, import_from

__all__ = ["OPS", "Kernel", "import_from"]


def __getattr__(name: str) -> Any:
    # Loaded on first use (PEP 562): pytest imports this package for its plugin in every run, and
    # .registration brings in Numba and Hypothesis (about 0.6 s), which a run without --quantbench needs not.
    if name in __all__:
        from . import registration  # noqa: PLC0415

        return getattr(registration, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The modules that moved to the quantbench package (GGUF files, models, the quantbench command)
# or were renamed: their old names still import, as the new modules themselves, with a
# DeprecationWarning, until the next release.
MOVED = {
    "kernel": "pytest_quantbench.registration",
    "record": "pytest_quantbench.findings",
    "throughput": "pytest_quantbench.table",
    "cli": "quantbench.cli",
    "compare": "quantbench.compare_policies",
    "decode": "quantbench.decode_step",
    "gemma3": "quantbench.gemma3",
    "gguf_files": "quantbench.gguf_files",
    "gguf_header": "quantbench.gguf_header",
    "llamacpp": "quantbench.llamacpp",
    "policy": "quantbench.policy",
    "requantize": "quantbench.requantize",
    "tokenizer": "quantbench.tokenizer",
}


class _Moved:
    """A meta path finder and loader for ``pytest_quantbench.<old name>``: the import gives the module
    at its new name (the loader puts it in ``sys.modules`` under the old one)."""

    @staticmethod
    def find_spec(fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != __name__ or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Moved)

    @staticmethod
    def create_module(spec: importlib.machinery.ModuleSpec) -> None:
        return None

    @staticmethod
    def exec_module(module: Any) -> None:
        new = MOVED[module.__name__.rpartition(".")[2]]
        warnings.warn(f"{module.__name__} is now {new}: import that (the old name goes in the next release)",
                      DeprecationWarning, stacklevel=2)
        sys.modules[module.__name__] = importlib.import_module(new)


# Once, also if this package is imported anew (pytester can drop it from sys.modules).
sys.meta_path[:] = [finder for finder in sys.meta_path if getattr(finder, "__module__", None) != __name__]
sys.meta_path.append(_Moved)
