"""Shared test configuration: skips are failures (see tests/noskip.py); dtk's words
read unwrapped."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.noskip"]


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal wide enough that no line dtk prints is wrapped: a test reads what dtk
    says, whole. How lines are wrapped and cut to a terminal's width is the point of
    the tests that set COLUMNS themselves (tests/unit/test_output_width.py,
    tests/unit/test_cli_tables.py, tests/integration/test_build_tour.py)."""
    monkeypatch.setenv("COLUMNS", "1000")
