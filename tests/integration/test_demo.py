"""`make demo` as a user runs it: twice, the second time from caches."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from dtk.toolkit.images import ToolkitImage

pytestmark = pytest.mark.integration


def demo() -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "dtk", "demo"], capture_output=True,
                          text=True, timeout=3600, check=False)
    return proc, time.monotonic() - start


@pytest.mark.usefixtures("toolkit_612")
def test_demo_end_to_end_then_from_caches(toolkit_612: ToolkitImage) -> None:
    first, first_s = demo()
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    out = first.stdout
    assert "every step passed" in out
    assert f"dtk demo: {toolkit_612.kernel} and its RT sibling {toolkit_612.rt_kernel}" in out
    assert out.count("hello from the dtk demo (read 1)") == 2
    assert "refused" in out and "disagrees about version of symbol" in out
    second, second_s = demo()
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "cache hit" in second.stdout
    assert "is already signed from" in second.stderr
    assert "is up to date" in second.stderr
    assert second_s < max(first_s, 120)
