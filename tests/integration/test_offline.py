"""`--offline` / DTK_OFFLINE=1: the kernel catalog comes from the index the machine
has, with its age said, and nothing is fetched; DTK_INDEX_MAX_AGE sets how old an
index may get before a command refreshes it (issue 17 §5). A proxy that refuses
every connection stands for a machine without network: apt honours http_proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration


def _dtk(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dtk", *args], check=False, capture_output=True,
                          text=True,
                          timeout=600, env={**os.environ, **env})


def test_offline_uses_the_index_there_is_and_says_how_old(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    cache = tmp_path / "cache"  # its own index: a failed refresh below touches no one's
    monkeypatch.setenv("DTK_CACHE_DIR", str(cache))
    assert _dtk("kernels", "--json").returncode == 0  # an index, fetched online
    before = {p: p.stat().st_mtime_ns for p in cache.glob("apt/*/updated")}
    assert before
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: any fetch fails
    no_network = {"http_proxy": dead, "https_proxy": dead, "DTK_INDEX_MAX_AGE": "0"}
    proc = _dtk("--offline", "kernels", "--json", **no_network)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)  # the catalog, from the index there is
    assert "offline: using the package index fetched " in proc.stderr
    assert " ago" in proc.stderr
    proc = _dtk("kernels", "--json", DTK_OFFLINE="1", **no_network)  # the variable too
    assert proc.returncode == 0, proc.stderr
    assert {p: p.stat().st_mtime_ns for p in cache.glob("apt/*/updated")} == before

    # Online with age 0 the same command must refresh, and the dead proxy shows it tried.
    proc = _dtk("kernels", "--json", **no_network)
    assert proc.returncode == 2 and "could not fetch package indexes" in proc.stdout

    fresh = tmp_path / "fresh"  # a machine that never had an index
    proc = _dtk("--offline", "kernels", DTK_CACHE_DIR=str(fresh), **no_network)
    assert proc.returncode == 2
    assert "there is no package index of these APT sources on this machine yet" in proc.stderr

    proc = _dtk("kernels", DTK_INDEX_MAX_AGE="soon")
    assert proc.returncode == 2 and "DTK_INDEX_MAX_AGE='soon' is not a number" in proc.stderr
