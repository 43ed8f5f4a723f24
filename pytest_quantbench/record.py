"""This session's benchmark measurements: the tags and every round's time, kept for the table,
the stored history and the gate."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pytest_benchmark.stats import Stats

_RECORDS = pytest.StashKey[list]()


@dataclass
class Measurement:
    """One benchmark: its tags (``extra_info``) and its rounds, in seconds per call."""

    info: dict
    rounds: list[float]

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


def record_benchmark(config: pytest.Config, benchmark, info: dict) -> None:
    """Keep what pytest-benchmark measured (nothing if it was disabled). The tags are kept as the
    fixture's own ``extra_info`` dict, so figures added to it later land in its saved JSON."""
    meta = getattr(benchmark, "stats", None)
    data = list(getattr(getattr(meta, "stats", None), "data", []) or [])
    if data:
        benchmark.extra_info.update(info)
        config.stash.setdefault(_RECORDS, []).append(Measurement(benchmark.extra_info, data))


def measurements(config: pytest.Config) -> list[Measurement]:
    return list(config.stash.get(_RECORDS, []))


def merge_passes(done: list[Measurement]) -> list[Measurement]:
    """One measurement per benchmark, the rounds of all its passes together (for the table)."""
    merged: dict[str, Measurement] = {}
    for m in done:
        if m.key in merged:
            merged[m.key].rounds = merged[m.key].rounds + m.rounds
        else:
            merged[m.key] = Measurement(m.info, list(m.rounds))
    return list(merged.values())
