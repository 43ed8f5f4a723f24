"""Hooks that pytest-quantbench adds; implement them in a ``conftest.py``."""

from __future__ import annotations

from typing import Any


def pytest_quantbench_kernels() -> Any:
    """Return the project's kernels to test: a list of :class:`pytest_quantbench.Kernel`.

    Every implementation is called and the results are concatenated.
    """
