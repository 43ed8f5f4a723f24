"""The three packages under src/: their imports run one way (quantbench_kernels <- quantbench <-
pytest_quantbench) with no circle inside any of them, the toolkit never imports pytest or
Hypothesis, and the toolkit's old names under pytest_quantbench still work, with a warning."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGES = ("quantbench_kernels", "quantbench", "pytest_quantbench")
# What each package may import of the others.
ALLOWED = {"quantbench_kernels": set(), "quantbench": {"quantbench_kernels"},
           "pytest_quantbench": {"quantbench_kernels", "quantbench"}}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The modules of the three packages that ``path`` imports anywhere in it (in functions, and
    under TYPE_CHECKING too: a type-only import circle is still a circle to a reader), as names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    modules = {_module_name(p) for p in SRC.rglob("*.py")}
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in SRC.rglob("*.py")}


def test_each_package_imports_only_those_below_it():
    for module, imports in _graph().items():
        top = module.split(".")[0]
        wrong = {m for m in imports if m.split(".")[0] != top and m.split(".")[0] not in ALLOWED[top]}
        assert not wrong, f"{module} imports {sorted(wrong)}"


def test_no_module_imports_itself_through_others():
    graph = _graph()
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail("import circle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        for other in sorted(graph.get(module, ())):
            # A package's __init__ that re-exports its modules is not a circle with them.
            if not (other == module.rpartition(".")[0] or module == other.rpartition(".")[0]):
                visit(other, path + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])


def test_the_circle_finder_finds_one(tmp_path, monkeypatch):
    for name, body in {"a": "from . import b\n", "b": "from .c import x\n", "c": "from .a import y\n"}.items():
        (tmp_path / "quantbench" / f"{name}.py").parent.mkdir(exist_ok=True)
        (tmp_path / "quantbench" / f"{name}.py").write_text(body)
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"import circle: quantbench.a -> quantbench.b -> "
                                                     r"quantbench.c -> quantbench.a"):
        test_no_module_imports_itself_through_others()


def test_the_toolkit_imports_neither_pytest_nor_hypothesis():
    modules = sorted(_module_name(p) for p in (SRC / "quantbench").glob("*.py") if p.stem != "__main__")
    probe = (f"import importlib, sys; [importlib.import_module(m) for m in {modules!r}]; "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'pytest', '_pytest', 'hypothesis', "
             "'pytest_quantbench'}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("old", "new"), [("cli", "cli"), ("decode", "decode_step"), ("compare", "compare_policies"),
                                          ("gguf_files", "gguf_files"), ("llamacpp", "llamacpp")])
def test_an_old_module_name_is_the_new_module_with_a_deprecation_warning(old, new):
    import importlib

    sys.modules.pop(f"pytest_quantbench.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"pytest_quantbench.{old} is now quantbench.{new}"):
        module = importlib.import_module(f"pytest_quantbench.{old}")
    assert module is importlib.import_module(f"quantbench.{new}")
    sys.modules.pop(f"pytest_quantbench.{old}", None)


def test_the_old_command_module_still_runs_the_command_and_says_it_moved():
    result = subprocess.run([sys.executable, "-m", "pytest_quantbench", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "usage: quantbench" in result.stdout
    assert "DeprecationWarning: python -m pytest_quantbench is deprecated: run quantbench" in result.stderr
