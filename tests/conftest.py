import numpy as np
import pytest

from pytest_quantbench.strategies import load_profile

load_profile()


@pytest.fixture(scope="session")
def libgguf():
    """llama.cpp's own quantizers through the libgguf wheel (the byte-equality oracle)."""
    return pytest.importorskip(
        "libgguf",
        reason="libgguf is not installed: it ships wheels for CPython 3.11 on x86-64 Linux only, "
        "so the byte-equality checks against llama.cpp cannot run here",
    )


def cos_input(n: int = 4096, offset: float = 0.0) -> np.ndarray:
    """llama.cpp's test-quantize-fns input: 0.1 + 2 cos(i + offset)."""
    return (0.1 + 2 * np.cos(np.arange(n) + offset)).astype(np.float32)
