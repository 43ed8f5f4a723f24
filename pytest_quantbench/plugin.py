"""The pytest11 entry point: it only wires pytest hooks to the functions that live elsewhere.

options (command line and ini), kernel (what is tested), suite (the tests ``--quantbench`` adds),
conformance (bit-exact checks), workloads / record / throughput (benchmarks and their table),
gate (stored runs and the regression verdict), fixtures (for downstream tests).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import gate, hookspec, options
from .fixtures import gguf_tensors, q2_k_blocks, q4_k_blocks, quant_blocks, tiny_gguf  # noqa: F401 - fixtures
from .record import measurements, merge_windows
from .throughput import derive, format_table

SUITE = Path(__file__).with_name("suite.py")
_GATE = pytest.StashKey[dict]()


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    if options.enabled(config):
        options.sizes(config)  # refuse a bad --quantbench-sizes before collecting anything
        if str(SUITE) not in config.args:
            config.args.append(str(SUITE))


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # The suite lives in site-packages, outside the rootdir: give its tests the readable node ids
    # "quantbench::test_..." instead of paths relative to wherever the package is installed.
    if module_path == SUITE:
        return pytest.Module.from_parent(parent, path=module_path, nodeid="quantbench")
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # With --quantbench-windows N, run pass 0 of every benchmark (kernels, references, probes), then
    # pass 1, ...: each pass has its own probe, measured near its kernels.
    def window(item: pytest.Item) -> int:
        callspec = getattr(item, "callspec", None)
        return callspec.params.get("qb_window", 0) if callspec is not None else 0

    items.sort(key=window)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    if not options.enabled(config):
        return None
    sizes = ", ".join(f"{s.label} ({s.weights} weights)" for s in options.sizes(config))
    lines = [f"quantbench: conformance and throughput suite on; sizes {sizes}"]
    if options.using_xdist(config):
        lines.append("quantbench: " + "benchmarks skipped under pytest-xdist (-n); conformance runs in parallel")
    return lines


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session):  # type: ignore[no-untyped-def]
    # An outer wrapper: runs before pytest-benchmark's wrapper writes its JSON, so the derived
    # figures land in each benchmark's extra_info.
    if options.enabled(session.config) and not options.in_xdist_worker(session.config):
        _finish(session)
    yield


def _finish(session: pytest.Session) -> None:
    config = session.config
    done = measurements(config)
    state: dict = {"rows": derive((m.info, m.median, m.iqr) for m in merge_windows(done))}
    name = config.getoption("quantbench_save")
    if name:
        state["saved"] = gate.save(options.storage_dir(config), name, gate.snapshot(done))
    compare_to = config.getoption("quantbench_compare")
    fail_pct = config.getoption("quantbench_fail_on")
    if compare_to or fail_pct is not None:
        state["fail_pct"] = fail_pct
        try:
            if not compare_to:
                raise gate.GateError("--quantbench-fail-on needs --quantbench-compare [NAME] to know the baseline")
            path = gate.resolve(options.storage_dir(config), compare_to)
            state["baseline"] = path
            state["verdicts"], state["problems"] = gate.compare(gate.load(path), done, fail_pct)
        except gate.GateError as err:
            state["verdicts"], state["problems"] = [], [str(err)]
        gate_failed = any(v.fails for v in state["verdicts"]) or (fail_pct is not None and state["problems"])
        if gate_failed and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    config.stash[_GATE] = state


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    state = config.stash.get(_GATE, None)
    if not state:
        return
    tr = terminalreporter
    if state["rows"]:
        tr.section("quantbench throughput (medians; roofline = GB/s over this run's np.copyto GB/s)")
        for line in format_table(state["rows"]):
            tr.write_line(line)
    if "saved" in state:
        tr.write_line(f"quantbench: saved this run as {state['saved']}")
    if "verdicts" in state:
        tr.section("quantbench gate")
        if "baseline" in state:
            tr.write_line(f"baseline: {state['baseline']} (times normalised by each run's np.copyto probe)")
        for line in gate.format_verdicts(state["verdicts"], state["fail_pct"]):
            tr.write_line(line)
        for problem in state["problems"]:
            tr.write_line(f"quantbench gate: {problem}", red=True)
        failed = [v.key for v in state["verdicts"] if v.fails]
        if failed:
            tr.write_line(f"quantbench gate FAILED: significantly slower: {', '.join(failed)}", red=True, bold=True)
        elif state["problems"] and state["fail_pct"] is not None:
            tr.write_line("quantbench gate FAILED: the baseline cannot be used (see above)", red=True, bold=True)
