import pytest

from pytest_quantbench.findings import measurements, merge_passes
from pytest_quantbench.gate import paired_ratios
from pytest_quantbench.table import LLAMACPP, derive, format_table

_rows = []
# The perf suite's baselines: what a user would otherwise call for each op.
BASELINES = ("gguf-py", "libgguf", "numpy-blas")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session):
    # An outer wrapper, before pytest-benchmark's saves its JSON: the derived figures land in extra_info.
    measured = measurements(session.config)
    # llama.cpp's kernel timed in between a row's rounds: paired before merge_passes joins the rounds.
    vs_llamacpp = paired_ratios(measured, LLAMACPP)
    done = merge_passes(measured)
    for m in done:
        if m.key in vs_llamacpp:
            ratio, low, high = vs_llamacpp[m.key]
            m.info.update(llamacpp_paired=1 / ratio, llamacpp_paired_ci=[1 / high, 1 / low])
    _rows[:] = derive(((m.info, m.median, m.iqr) for m in done), BASELINES)
    yield


def pytest_terminal_summary(terminalreporter):
    if _rows:
        terminalreporter.section("quantbench throughput (median of rounds; ratios within this run)")
        for line in format_table(_rows):
            terminalreporter.write_line(line)
