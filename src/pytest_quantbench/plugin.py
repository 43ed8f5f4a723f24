"""The pytest11 entry point: it only wires pytest hooks to the functions that live elsewhere.

options (command line and ini), kernel (what is tested), suite (the tests ``--quantbench`` adds),
conformance (bit-exact checks), workloads / record / throughput (benchmarks and their table),
report (the end of the session), gate (stored runs and the regression verdict), fixtures (for
downstream tests).

pytest imports every installed plugin in every run, so this module imports nothing heavy: the
modules above (Numba, the kernels, Hypothesis, the gate) load when ``--quantbench`` is given, and
the fixtures' own imports when a test requests one. Its hook markers come from pluggy, which
pytest has loaded by then (``pytest.hookimpl`` is ``pluggy.HookimplMarker("pytest")``): importing
pytest here would cost more than the rest of the module.
"""

from __future__ import annotations

import os

from pluggy import HookimplMarker

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (or pathlib below)
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    import pytest

hookimpl = HookimplMarker("pytest")

SUITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "suite.py")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    from . import options

    options.add_options(parser)


@hookimpl(tryfirst=True)  # before pytest-benchmark reads --benchmark-quiet
def pytest_configure(config: pytest.Config) -> None:
    from . import fixtures, options

    if not config.pluginmanager.is_registered(fixtures):  # for downstream tests, --quantbench or not
        config.pluginmanager.register(fixtures, "quantbench-fixtures")
    if options.enabled(config):
        from . import findings

        options.validate(config)  # refuse bad option values before collecting anything
        if SUITE not in config.args:
            config.args.append(SUITE)
        if not config.getoption("quantbench_benchmark_table") and hasattr(config.option, "benchmark_quiet"):
            config.option.benchmark_quiet = True  # the summary is the one table
        config.pluginmanager.register(findings.ConformanceCollector(config), "quantbench-conformance")
    else:
        options.refuse_without_quantbench(config)


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # The suite lives in site-packages, outside the rootdir: give its tests the readable node ids
    # "quantbench::test_..." instead of paths relative to wherever the package is installed.
    if str(module_path) == SUITE:
        import pytest

        return pytest.Module.from_parent(parent, path=module_path, nodeid="quantbench")
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from . import options

    if options.enabled(config):
        from . import workloads

        workloads.order_by_pass(items)


def pytest_collection_finish(session: pytest.Session) -> None:
    from . import options

    if options.enabled(session.config):
        from . import findings

        findings.expect(session.config, session.items, SUITE)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    from . import options

    if not options.enabled(config):
        return None
    from . import report

    sizes = ", ".join(f"{s.label} ({s.weights} weights)" for s in options.sizes(config))
    lines = [f"quantbench: conformance and throughput suite on; sizes {sizes}"]
    lines += report.header_kernels(config)
    for old, new in options.ab_names(config):
        lines.append(f"quantbench: A/B: {new} timed against {old}, in this process, round by round")
    if options.using_xdist(config):
        lines.append("quantbench: benchmarks skipped under pytest-xdist (-n); conformance runs in parallel")
    return lines


@hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> Any:
    # An outer wrapper: runs before pytest-benchmark's wrapper writes its JSON, so the derived
    # figures land in each benchmark's extra_info.
    from . import options

    if options.enabled(session.config) and not options.in_xdist_worker(session.config):
        from . import report

        report.finish(session)
    yield


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    from . import options

    if options.enabled(config):
        from . import report

        report.summary(terminalreporter, config)
