"""`dtk kernels` against the real archive named by the machine's APT sources."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dtk.distro import aptsources

pytestmark = pytest.mark.integration


def _dtk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dtk", *args], capture_output=True, text=True,
                          check=False, timeout=300)


def test_catalog_has_both_lines_and_all_flavours() -> None:
    result = _dtk("kernels", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    assert {e["line"] for e in entries} >= {"6.1", "6.12"}
    assert {e["flavour"] for e in entries} >= {"standard", "rt", "cloud"}
    pointed = {m for e in entries for m in e["metapackages"]}
    assert {"linux-image-amd64", "linux-image-rt-amd64", "linux-image-6.12-amd64"} <= pointed


def test_latest_rt_per_line() -> None:
    result = _dtk("kernels", "--flavour", "rt", "--latest", "--json")
    entries = json.loads(result.stdout)
    assert sorted(e["line"] for e in entries) == ["6.1", "6.12"]
    assert all(e["release"].endswith("-rt-amd64") for e in entries)
    assert all(e["metapackages"] for e in entries)


def test_sources_file_gives_the_same_catalog(tmp_path: Path) -> None:
    """--sources with the machine's own sources, rendered to a file, as a mirror user would."""
    path = tmp_path / "mirror.sources"
    path.write_text(aptsources.render(aptsources.read_host_sources()))
    own = json.loads(_dtk("kernels", "--json").stdout)
    mirrored = _dtk("kernels", "--sources", str(path), "--json")
    assert mirrored.returncode == 0, mirrored.stderr
    assert json.loads(mirrored.stdout) == own


def test_unreachable_mirror_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "dead.list"
    # Port 9 (discard) on loopback: nothing listens, so every retry is refused.
    path.write_text("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
                    "http://127.0.0.1:9/debian bookworm main\n")
    result = _dtk("kernels", "--sources", str(path))
    assert result.returncode == 2
    assert "could not fetch package indexes" in result.stderr
    assert "127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr
