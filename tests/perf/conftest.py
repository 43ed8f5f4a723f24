import pytest

from pytest_quantbench.record import measurements, merge_passes
from pytest_quantbench.throughput import derive, format_table

_rows = []
# The perf suite's baselines: what a user would otherwise call for each op.
BASELINES = ("gguf-py", "libgguf", "numpy-blas")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session):
    # An outer wrapper, before pytest-benchmark's saves its JSON: the derived figures land in extra_info.
    _rows[:] = derive(((m.info, m.median, m.iqr) for m in merge_passes(measurements(session.config))), BASELINES)
    yield


def pytest_terminal_summary(terminalreporter):
    if _rows:
        terminalreporter.section("quantbench throughput (median of rounds; ratios within this run)")
        for line in format_table(_rows):
            terminalreporter.write_line(line)
