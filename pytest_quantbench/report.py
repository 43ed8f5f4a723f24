"""The end of a ``--quantbench`` session: the throughput table, storing the run, the gate's verdict."""

from __future__ import annotations

import pytest

from . import gate, options
from .record import measurements, merge_passes
from .throughput import derive, format_table

_STATE = pytest.StashKey[dict]()


def finish(session: pytest.Session) -> None:
    """Derive the table's figures (into each benchmark's extra_info), save the run if asked, run the
    gate if asked, and set a failing exit status when the gate fails."""
    config = session.config
    done = measurements(config)
    state: dict = {"rows": derive((m.info, m.median, m.iqr) for m in merge_passes(done))}
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
    config.stash[_STATE] = state


def summary(tr: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print the table, where the run was saved, and the gate's verdicts and problems."""
    state = config.stash.get(_STATE, None)
    if not state:
        return
    if state["rows"]:
        tr.section("quantbench throughput (medians; roofline = GB/s over this run's np.copyto GB/s)")
        for line in format_table(state["rows"]):
            tr.write_line(line)
    if "saved" in state:
        tr.write_line(f"quantbench: saved this run as {state['saved']}")
    if "verdicts" not in state:
        return
    tr.section("quantbench gate")
    if "baseline" in state:
        tr.write_line(f"baseline: {state['baseline']} (ratios corrected for the change of the np.copyto probe "
                      f"beyond +-{gate.PROBE_BAND:.0%} or PCT/2)")
    for line in gate.format_verdicts(state["verdicts"], state["fail_pct"]):
        tr.write_line(line)
    for problem in state["problems"]:
        tr.write_line(f"quantbench gate: {problem}", red=True)
    failed = [v.key for v in state["verdicts"] if v.fails]
    if failed:
        tr.write_line(f"quantbench gate FAILED: significantly slower: {', '.join(failed)}", red=True, bold=True)
        tr.write_line("quantbench gate: on a shared machine a whole process can run slow (its buffers on slower "
                      "memory); before trusting one failing run, rerun the same command: a real slowdown fails again")
    elif state["problems"] and state["fail_pct"] is not None:
        tr.write_line("quantbench gate FAILED: the baseline cannot be used (see above)", red=True, bold=True)
