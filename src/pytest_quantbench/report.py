"""The end of a ``--quantbench`` session: the throughput table, storing the run, the gate's verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from . import gate, options, storage
from .findings import (
    Measurement,
    ab_measurements,
    conformance_results,
    measurements,
    merge_passes,
    not_measured,
    unchecked,
)
from .registration import BUILTIN, Kernel, registered_kernels
from .table import Row, derive, format_table


@dataclass
class GateOutcome:
    """What the gate found: the baseline it read (None if it found none, or for A/B), its
    verdicts, and the problems that make the comparison unusable."""

    fail_pct: float | None
    name: str = "quantbench gate"
    how: str = ""  # said in the section's title
    baseline: Path | None = None
    verdicts: list[gate.Verdict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(v.fails for v in self.verdicts) or (self.fail_pct is not None and bool(self.problems))


@dataclass
class SaveOutcome:
    """What --quantbench-save NAME did: the file written, or why nothing was."""

    name: str
    path: Path | None = None
    problem: str | None = None
    removed: list[str] = field(default_factory=list)  # killed saves' temporary files removed


@dataclass
class SessionReport:
    """The end of a --quantbench session: the table's rows, the save, the gate."""

    rows: list[Row]
    save: SaveOutcome | None = None
    gates: list[GateOutcome] = field(default_factory=list)


_REPORT = pytest.StashKey[SessionReport]()


def _run_gate(config: pytest.Config, done: list) -> GateOutcome:
    compare_to = config.getoption("quantbench_compare")
    outcome = GateOutcome(fail_pct=config.getoption("quantbench_fail_on"))
    try:
        outcome.baseline = storage.resolve(options.storage_dir(config), compare_to)
        outcome.verdicts, outcome.problems = gate.compare(storage.load(outcome.baseline), done, outcome.fail_pct)
    except storage.StorageError as err:
        outcome.problems = [str(err)]
    return outcome


def _run_ab(config: pytest.Config) -> GateOutcome:
    outcome = GateOutcome(fail_pct=config.getoption("quantbench_fail_on"), name="quantbench A/B",
                          how="one process, OLD's calls in between NEW's rounds")
    outcome.verdicts, outcome.problems = gate.ab_compare(ab_measurements(config), outcome.fail_pct)
    return outcome


def _save(session: pytest.Session, name: str, done: list[Measurement]) -> SaveOutcome:
    """Store the run as NAME, unless it is not a whole run: interrupted, measuring nothing, or
    missing some of the benchmarks it selected (a stored run is a baseline: a partial one would
    replace a good one and silently drop kernels from the gate)."""
    config = session.config
    outcome = SaveOutcome(name)
    missing = not_measured(config)
    if session.exitstatus == pytest.ExitCode.INTERRUPTED:
        outcome.problem = "the run was interrupted"
    elif not done:
        outcome.problem = ("this run measured no benchmarks (none selected, pytest-xdist's -n, --benchmark-disable "
                           "or --benchmark-skip)")
    elif missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        outcome.problem = f"{len(missing)} of the selected benchmarks measured nothing (failed or skipped): {shown}"
    else:
        try:
            outcome.path = storage.save(options.storage_dir(config), name, storage.snapshot(done),
                                        keep=options.keep(config), removed=outcome.removed)
        except storage.StorageError as err:
            outcome.problem = str(err)
        except OSError as err:
            outcome.problem = f"writing it failed: {err}"
    return outcome


def finish(session: pytest.Session) -> None:
    """Derive the table's figures (into each benchmark's extra_info), save the run if asked, run the
    gate if asked, and set a failing exit status when the gate fails."""
    config = session.config
    done = measurements(config)
    baselines = config.getoption("quantbench_baseline") or []
    report = SessionReport(rows=derive(((m.info, m.median, m.iqr) for m in merge_passes(done)), baselines))
    if config.getoption("quantbench_compare"):  # before saving: "latest" must not be this very run
        report.gates.append(_run_gate(config, done))
    if options.ab_names(config):
        report.gates.append(_run_ab(config))
    if any(g.failed for g in report.gates) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    name = config.getoption("quantbench_save")
    if name:
        report.save = _save(session, name, done)
        if report.save.problem and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    config.stash[_REPORT] = report


def summary(tr: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Print the table, where the run was saved, and the gate's verdicts and problems."""
    report = config.stash.get(_REPORT, None)
    if report is None:
        return
    found = {key: c.describe() for key, c in conformance_results(config).items()}
    if report.rows or found:
        tr.section("quantbench summary (conformance; throughput medians, roofline = GB/s over this run's "
                   "np.copyto GB/s)")
        for line in format_table(report.rows, found):
            tr.write_line(line)
        if registered_kernels(config).compared and any(r.info["impl"] == BUILTIN for r in report.rows):
            tr.write_line(f"{BUILTIN}: the package's built-in kernels, measured for comparison, not conformance-"
                          "tested here (--quantbench-builtins test)")
    for line in unchecked(config):
        tr.write_line(f"quantbench: {line}", yellow=True)
    for line in report.save.removed if report.save is not None else []:
        tr.write_line(f"quantbench: {line}")
    if report.save is not None and report.save.path is not None:
        tr.write_line(f"quantbench: saved this run as {report.save.path}")
    elif report.save is not None:
        tr.write_line(f"quantbench: --quantbench-save {report.save.name}: NOT saved: {report.save.problem} "
                      f"(any stored run of that name is unchanged)", red=True, bold=True)
    for outcome in report.gates:
        _print_gate(tr, outcome)


def _print_gate(tr: pytest.TerminalReporter, outcome: GateOutcome) -> None:
    tr.section(f"{outcome.name} ({outcome.how})" if outcome.how else outcome.name)
    if outcome.baseline is not None:
        tr.write_line(f"baseline: {outcome.baseline} (ratio = this run's time / the baseline's, each round over "
                      f"the probe timed around it; runs: the baseline's runs, spread: theirs)")
    for line in gate.format_verdicts(outcome.verdicts, outcome.fail_pct):
        tr.write_line(line)
    for problem in outcome.problems:
        tr.write_line(f"{outcome.name}: {problem}", red=True)
    failed = [v.key for v in outcome.verdicts if v.fails]
    if failed:
        tr.write_line(f"quantbench gate FAILED: significantly slower: {', '.join(failed)}", red=True, bold=True)
        if outcome.baseline is not None:
            tr.write_line("quantbench gate: on a shared machine a whole process can run slow (its buffers on slower "
                          "memory); before trusting one failing run, rerun the same command: a real slowdown fails "
                          "again, or gate in one process with --quantbench-ab")
    elif outcome.failed:
        tr.write_line("quantbench gate FAILED: the baseline cannot be used (see above)", red=True, bold=True)


def _pairs(kernels: list[Kernel]) -> str:
    return ", ".join(f"{k.format_name} {k.op}" for k in kernels)


def header_kernels(config: pytest.Config) -> list[str]:
    """The report header's lines about the kernels under test: each registered name with its
    formats and ops, and what happens to the built-ins."""
    registered = registered_kernels(config, cache=False)
    own = registered.own
    lines = []
    by_name: dict[str, list[Kernel]] = {}
    for k in own:
        by_name.setdefault(k.name, []).append(k)
    if by_name:
        lines.append("quantbench: kernels: " + "; ".join(f"{name}: {_pairs(ks)}" for name, ks in by_name.items()))
    if registered.compared:
        lines.append(f"quantbench: built-in kernels ({BUILTIN}) measured beside them, not tested "
                     f"(--quantbench-builtins test): {_pairs(registered.compared)}")
    elif any(isinstance(k, Kernel) and k.name == BUILTIN for k in registered.tested):
        lines.append(f"quantbench: built-in kernels ({BUILTIN}) tested and measured: every format and op")
    return lines
