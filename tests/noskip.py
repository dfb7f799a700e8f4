"""A skipped test is a failed test, in every run of `make test` (not only in CI).

Integration tests run against the real tools or not at all, and a skip must
never be reported as a pass. This covers skips at run time and at collection
time (a module-level `pytest.skip` or a failed import guarded by one). Set
DTK_ALLOW_SKIP=1 for an exploratory run that wants skips to stay skips.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest


def _allowed() -> bool:
    return os.environ.get("DTK_ALLOW_SKIP") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and not _allowed():
        report.outcome = "failed"
        report.longrepr = f"a skip counts as a failure: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and not _allowed():
        report.outcome = "failed"
        report.longrepr = f"a skip at collection counts as a failure: {report.longrepr}"
