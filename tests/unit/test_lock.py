"""Two dtk runs meeting at a host lock: the second says whom it waits for."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dtk.lock import locked


def test_a_waiting_run_names_the_holder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock = tmp_path / "locks" / "toolkit-build"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from dtk.lock import locked\n"
         f"with locked(Path({str(lock)!r})):\n"
         "    print('held', flush=True); time.sleep(1.5)",
         "toolkit", "build", "--sources", "/home/someone/private.sources"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, "dtk.lock"), locked(lock, "toolkit-build"):
            waited = time.monotonic() - start
    finally:
        holder.wait(timeout=30)
    assert waited > 0.5  # it really waited for the other process
    (message,) = [r.getMessage() for r in caplog.records if r.name == "dtk.lock"]
    # The pid and the command's name, nothing else from its command line; owner-only.
    assert message == (f"waiting for the toolkit-build lock held by pid {holder.pid}: "
                       "dtk toolkit build")
    assert lock.stat().st_mode & 0o777 == 0o600


def test_an_uncontended_lock_says_nothing(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "dtk.lock"), locked(tmp_path / "l"):
        pass
    assert not caplog.records
