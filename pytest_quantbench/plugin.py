"""The pytest11 entry point: only wires pytest hooks to functions that live elsewhere.

For now it adds the ``--quantbench`` option; the conformance and benchmark suite it will run is not
there yet, and the option says so instead of silently doing nothing.
"""

from __future__ import annotations

import pytest

NOT_YET = "--quantbench: the conformance and throughput suite is not implemented yet (see issue 3)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("quantbench", "quantized kernel conformance and throughput")
    group.addoption(
        "--quantbench",
        action="store_true",
        default=False,
        help="run the pytest-quantbench conformance and throughput suite (arrives in a later release)",
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    if config.getoption("quantbench"):
        return NOT_YET
    return None
