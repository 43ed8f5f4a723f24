"""What this session found: each kernel's conformance results, and its benchmark measurements (the
tags and every round's time, kept for the table, the stored history and the gate)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from pytest_benchmark.stats import Stats

_RECORDS = pytest.StashKey[list]()
_AB = pytest.StashKey[list]()
_EXPECTED = pytest.StashKey[list]()
_CONFORMANCE = pytest.StashKey[dict]()
_UNCHECKED = pytest.StashKey[list]()
CONFORMANCE_PROPERTY = "quantbench_conformance"  # a user property of each conformance test's report


@dataclass
class Conformance:
    """What the conformance tests found for one kernel, format and op: the criterion, how many
    tests passed and failed, and the largest distance measured (ulps from the reference's output,
    share of the allowed error) over every input they checked."""

    criterion: str
    passed: int = 0
    failed: int = 0
    max_ulps: int = 0
    bound_share: float | None = None
    values: int = 0
    non_finite: int = 0  # values non-finite on both sides, matched (not in max_ulps)

    def describe(self) -> str:
        if self.failed:
            return f"FAILED ({self.failed} of {self.passed + self.failed} tests)"
        counted = (f"{self.values} values" + (f", {self.non_finite} non-finite, matched" if self.non_finite else "")
                   + f", {self.passed} test{'s' if self.passed != 1 else ''}")
        if self.criterion == "bit-identical":
            return f"bit-identical ({counted})"
        share = "-" if self.bound_share is None else f"{100 * self.bound_share:.3g}%"
        return f"{self.criterion}: max {self.max_ulps} ulps, {share} of the allowed error ({counted})"


def start_conformance(node: pytest.Item, kernel_key: tuple[str, str, str], criterion: str) -> dict:
    """The dict a conformance test fills in as it checks inputs: kept as a user property of the
    test, so that it reaches the summary even from a pytest-xdist worker."""
    result = {"key": list(kernel_key), "criterion": criterion, "max_ulps": 0, "bound_share": None, "values": 0,
              "non_finite": 0}
    node.user_properties.append((CONFORMANCE_PROPERTY, result))
    return result


def add_distance(result: dict, max_ulps: int, bound_share: float | None, values: int, non_finite: int = 0) -> None:
    result["non_finite"] = result.get("non_finite", 0) + non_finite
    result["max_ulps"] = max(result["max_ulps"], max_ulps)
    if bound_share is not None:
        result["bound_share"] = max(result["bound_share"] or 0.0, bound_share)
    result["values"] += values


def conformance_report(config: pytest.Config, report: pytest.TestReport) -> None:
    """Fold one test report's conformance property (if any) into the session's results."""
    if report.when != "call":
        return
    for name, result in getattr(report, "user_properties", ()):
        if name != CONFORMANCE_PROPERTY:
            continue
        key = tuple(result["key"])
        entry = config.stash.setdefault(_CONFORMANCE, {}).setdefault(key, Conformance(result["criterion"]))
        if report.failed:
            entry.failed += 1
        elif report.passed:
            entry.passed += 1
            entry.max_ulps = max(entry.max_ulps, result["max_ulps"])
            if result["bound_share"] is not None:
                entry.bound_share = max(entry.bound_share or 0.0, result["bound_share"])
            entry.values += result["values"]
            entry.non_finite += result.get("non_finite", 0)


def note_unchecked(config: pytest.Config, reasons: list[str]) -> None:
    """Keep the lines that say which quantized tensors of the GGUF files no kernel checks, and why."""
    kept = config.stash.setdefault(_UNCHECKED, [])
    kept.extend(r for r in reasons if r not in kept)


def unchecked(config: pytest.Config) -> list[str]:
    return list(config.stash.get(_UNCHECKED, []))


def conformance_results(config: pytest.Config) -> dict[tuple[str, str, str], Conformance]:
    """(kernel name, format, op) -> what its conformance tests found this session."""
    return dict(config.stash.get(_CONFORMANCE, {}))


@dataclass
class Measurement:
    """One benchmark: its tags (``extra_info``), its rounds in seconds per call, the test (node id)
    that measured it, and the calls timed in between its rounds (``paired[name]``: one more time
    than there are rounds; round i ran between paired call i and paired call i + 1)."""

    info: dict
    rounds: list[float]
    nodeid: str = ""
    paired: dict[str, list[float]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        i = self.info
        return f"{i['impl']}|{i['format']}|{i['op']}|{i['size']}"

    def _stats(self) -> Stats:
        stats = Stats()
        for t in self.rounds:
            stats.update(t)
        return stats

    @property
    def median(self) -> float:
        return float(self._stats().median)

    @property
    def iqr(self) -> float:
        """pytest-benchmark's interquartile range, so that the table and its JSON agree."""
        return float(self._stats().iqr)


def record_benchmark(config: pytest.Config, benchmark, info: dict, *, paired: dict[str, list[float]] | None = None,
                     ab: bool = False) -> None:
    """Keep what pytest-benchmark measured (nothing if it was disabled), with the calls timed in
    between its rounds. The tags are kept as the fixture's own ``extra_info`` dict, so figures added
    to it later land in its saved JSON. ``ab``: an A/B measurement (the paired calls are the
    baseline kernel's), kept apart from the throughput table and the stored runs."""
    meta = getattr(benchmark, "stats", None)
    data = list(getattr(getattr(meta, "stats", None), "data", []) or [])
    if data:
        benchmark.extra_info.update(info)
        paired = {name: list(times) for name, times in (paired or {}).items() if len(times) == len(data) + 1}
        config.stash.setdefault(_AB if ab else _RECORDS, []).append(
            Measurement(benchmark.extra_info, data, benchmark.fullname, paired))


def measurements(config: pytest.Config) -> list[Measurement]:
    return list(config.stash.get(_RECORDS, []))


def ab_measurements(config: pytest.Config) -> list[Measurement]:
    """The A/B benchmarks: the new kernel's rounds, the old kernel's as ``paired["A"]``."""
    return list(config.stash.get(_AB, []))


def expect(config: pytest.Config, items: list[pytest.Item], module: str) -> None:
    """Note the benchmarks this session was asked to measure: the selected tests of ``module``
    (the suite's file) that take pytest-benchmark's fixture and are not marked to skip."""
    config.stash[_EXPECTED] = [item.nodeid for item in items if str(getattr(item, "path", "")) == module
                               and "benchmark" in getattr(item, "fixturenames", ())
                               and item.get_closest_marker("skip") is None]


def not_measured(config: pytest.Config) -> list[str]:
    """The node ids of the selected benchmarks that measured nothing (failed, skipped, interrupted)."""
    done = {m.nodeid for m in measurements(config) + ab_measurements(config)}
    return [nodeid for nodeid in config.stash.get(_EXPECTED, []) if nodeid not in done]


def merge_passes(done: list[Measurement]) -> list[Measurement]:
    """One measurement per benchmark, the rounds of all its passes together (for the table)."""
    merged: dict[str, Measurement] = {}
    for m in done:
        if m.key in merged:
            merged[m.key].rounds = merged[m.key].rounds + m.rounds
        else:
            merged[m.key] = Measurement(m.info, list(m.rounds))
    return list(merged.values())


def shorten_failure(report: pytest.TestReport, call: pytest.CallInfo, verbosity: int) -> None:
    """A conformance failure reported as its message (kernel, block, bytes) and Hypothesis' notes
    (the falsifying example, the blob to reproduce it), without the traceback through the plugin's
    own code; the whole traceback under -vv. Where Hypothesis found several distinct failures (an
    exception group of them), each the same way, one after another."""
    from .conformance import ConformanceError

    if report.when != "call" or not report.failed or call.excinfo is None or verbosity >= 2:
        return
    errors = _leaves(call.excinfo.value)
    if not all(isinstance(e, ConformanceError) for e in errors):
        return
    report.longrepr = "\n\n".join("\n".join([str(e), *_notes(e)]) for e in errors) + "\n(-vv shows the traceback)"


def _leaves(err: BaseException) -> list[BaseException]:
    """The exceptions of an exception group (Hypothesis raises one for several distinct failures;
    the builtin's or the exceptiongroup backport's on Python 3.10), nested ones flattened; else ``err``."""
    group = getattr(err, "exceptions", None)
    if not isinstance(group, tuple):
        return [err]
    return [leaf for e in group for leaf in _leaves(e)]


def _notes(err: BaseException) -> list[str]:
    """Hypothesis' notes of ``err``: the falsifying example and the blob to reproduce it. Its
    "Explanation" (the lines only failing cases ran, the plugin's own code) is left for -vv: the
    notes from it up to the blob's."""
    notes, explaining = [], False
    for note in getattr(err, "__notes__", ()):
        explaining = (explaining or note.startswith("Explanation:")) and not note.startswith("You can reproduce")
        if note.strip() and not explaining:
            notes.append(note)
    return notes


def quiet_unused_benchmark(item: pytest.Item, report: pytest.TestReport) -> None:
    """A benchmark test that failed before timing anything (a bad kernel): pytest-benchmark would
    add "fixture was not used at all" on top of the failure (an error under ``-W error``). Marked
    skipped after pytest-benchmark's own report hook, which sets that flag from the outcome."""
    fixture = getattr(item, "funcargs", {}).get("benchmark")
    if report.when == "call" and report.failed and hasattr(fixture, "skipped"):
        fixture.skipped = True


class ConformanceCollector:
    """A plugin object that folds every test report's conformance results into the session's."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        conformance_report(self.config, report)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outermost: after pytest-benchmark's wrapper
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201 - a hook wrapper
        outcome = yield
        report = outcome.get_result()
        shorten_failure(report, call, self.config.get_verbosity())
        quiet_unused_benchmark(item, report)
