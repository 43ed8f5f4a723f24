"""Installable as users install it: the sdist and wheel build (``python -m build``), the wheel
installs into a fresh virtual environment (not editable), and a downstream project's
``pytest --quantbench`` runs on it, also when site-packages is read-only (Numba's cache then
falls back to another folder, or off, and never fails the run)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).parents[1]

CONFTEST = """
import quantbench_kernels as qk
from pytest_quantbench import Kernel

def pytest_quantbench_kernels():
    return [Kernel("downstream", "Q4_K", "dequantize", lambda raw: qk.dequantize(raw, "Q4_K", threads=1), threads=1)]
"""


def _run(args: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, args))} exited {result.returncode}:\n" \
                                   f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed():
    """A fresh virtual environment with the wheel built from this checkout's sdist installed
    (under /tmp, readable by all: the read-only case runs it as another user)."""
    work = Path(tempfile.mkdtemp(prefix="quantbench-wheel-"))
    work.chmod(0o755)
    dist = work / "dist"
    _run([sys.executable, "-m", "build", "--outdir", dist, ROOT])  # the sdist, then the wheel from it
    wheels = sorted(dist.glob("pytest_quantbench-*.whl"))
    assert wheels and sorted(dist.glob("pytest_quantbench-*.tar.gz"))
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", venv])
    _run([venv / "bin" / "pip", "install", "--quiet", wheels[-1]])
    yield venv
    shutil.rmtree(work, ignore_errors=True)


def _downstream() -> Path:
    # Under /tmp, world-writable: the read-only case runs as another user.
    project = Path(tempfile.mkdtemp(prefix="quantbench-downstream-"))
    project.chmod(0o777)
    (project / "conftest.py").write_text(CONFTEST)
    (project / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return project


def test_the_wheel_installs_and_runs_a_downstream_quantbench(installed):
    python = installed / "bin" / "python"
    project = _downstream()
    where = _run([python, "-c", "import pytest_quantbench, quantbench_kernels; print(pytest_quantbench.__file__); "
                                "print(quantbench_kernels.__file__)"], cwd=project).stdout.split()
    assert all(str(installed) in w for w in where), where  # the wheel's copy, not this checkout's
    result = _run([python, "-m", "pytest", "--quantbench", "-k", "conformance"], cwd=project)
    # The Hypothesis test and the 3 fixed shapes of the Q4_K kernel (tests/test_wheel.py's conftest).
    assert "4 passed" in result.stdout and "bit-identical" in result.stdout


def test_a_read_only_site_packages_does_not_fail_the_run(installed):
    """site-packages unwritable and no writable home: Numba can cache nowhere, so the kernels
    compile without the cache instead of failing."""
    site = next((installed / "lib").glob("python*/site-packages"))
    project = _downstream()
    env = {**os.environ, "HOME": "/nonexistent", "XDG_CACHE_HOME": "/nonexistent/.cache"}
    env.pop("NUMBA_CACHE_DIR", None)
    command = [installed / "bin" / "python", "-m", "pytest", "--quantbench", "-k", "conformance"]
    if os.geteuid() == 0:  # root writes anywhere: run as nobody, to whom site-packages is read-only
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: cannot make site-packages read-only")
        command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]
    else:
        subprocess.run(["chmod", "-R", "a-w", str(site)], check=True)
    try:
        probe = _run([*command[:-5], "-c", f"import os; print(os.access({str(site)!r}, os.W_OK))"], cwd=project,
                     env=env)
        assert probe.stdout.strip() == "False"
        result = _run(command, cwd=project, env=env)
        assert "4 passed" in result.stdout
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(site)], check=False)
