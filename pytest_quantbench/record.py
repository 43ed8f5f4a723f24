"""This session's benchmark measurements: the tags and every round's time, kept for the table,
the stored history and the gate."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from pytest_benchmark.stats import Stats

_RECORDS = pytest.StashKey[list]()
_AB = pytest.StashKey[list]()
_EXPECTED = pytest.StashKey[list]()


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
