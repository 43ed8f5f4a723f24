import pytest

from pytest_quantbench.throughput import derive, format_table

_rows = []


def _measurements(session):
    bs = getattr(session.config, "_benchmarksession", None)
    for bench in getattr(bs, "benchmarks", []):
        if bench.extra_info.get("quantbench") and bench.stats:
            yield bench.extra_info, bench.stats.median, bench.stats.iqr


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session):
    # An outer wrapper, before pytest-benchmark's saves its JSON: the derived figures land in extra_info.
    _rows[:] = derive(_measurements(session))
    yield


def pytest_terminal_summary(terminalreporter):
    if _rows:
        terminalreporter.section("quantbench throughput (median of rounds; ratios within this run)")
        for line in format_table(_rows):
            terminalreporter.write_line(line)
