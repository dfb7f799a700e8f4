"""`dtk kernels` against the real archive named by the machine's APT sources."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtk.distro import aptsources
from dtk.distro.debian import DebianArchive

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


def _stanzas(index: Path) -> Iterator[dict[str, str]]:
    """Package, Version and Depends of each stanza of an APT Packages file."""
    for block in index.read_text(errors="replace").split("\n\n"):
        fields = dict(re.findall(r"(?m)^(Package|Version|Depends): (.*)$", block))
        if "Package" in fields:
            yield fields


def _newest(stanzas: list[dict[str, str]]) -> dict[str, str]:
    """The stanza with the highest Version, as dpkg orders versions."""
    def compare(a: dict[str, str], b: dict[str, str]) -> int:
        lower = subprocess.run(["dpkg", "--compare-versions", a["Version"], "lt",
                                b["Version"]], check=False).returncode == 0
        return -1 if lower else (0 if a["Version"] == b["Version"] else 1)
    return max(stanzas, key=functools.cmp_to_key(compare))


def _archive_rt_latest(archive: DebianArchive) -> dict[str, tuple[str, list[str]]]:
    """line -> (newest RT release, the packages whose newest version depends on its
    image), read straight from the archive's Packages files at run time: Debian may
    publish an RT kernel before its metapackage points at it."""
    archive.index.update()
    by_name: dict[str, list[dict[str, str]]] = {}
    for index in archive.index.index_files():
        for stanza in _stanzas(index):
            by_name.setdefault(stanza["Package"], []).append(stanza)
    images: dict[str, list[dict[str, str]]] = {}
    for name, stanzas in by_name.items():
        m = re.fullmatch(r"linux-image-(\d+\.\d+[.\d]*[-+][^ ]*-rt-amd64)(?:-unsigned)?", name)
        if m:
            images.setdefault(m[1], []).extend(stanzas)
    latest: dict[str, tuple[str, dict[str, str]]] = {}
    for release, stanzas in images.items():
        m = re.match(r"\d+\.\d+", release)
        assert m
        newest = _newest(stanzas)
        known = latest.get(m[0])
        if known is None or _newest([known[1], newest]) is newest:
            latest[m[0]] = (release, newest)
    result = {}
    for line, (release, _stanza) in latest.items():
        wanted = {f"linux-image-{release}", f"linux-image-{release}-unsigned"}
        metas = sorted(name for name, stanzas in by_name.items()
                       if name.startswith("linux-image-") and name not in wanted
                       and not name.endswith("-dbg") and wanted & {
                           dep.split()[0] for group in _newest(stanzas).get("Depends", "")
                           .split(",") for dep in group.split("|") if dep.strip()})
        result[line] = (release, metas)
    return result


def test_latest_rt_per_line(archive: DebianArchive) -> None:
    result = _dtk("kernels", "--flavour", "rt", "--latest", "--json")
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout)
    expected = _archive_rt_latest(archive)
    assert {e["line"]: (e["release"], e["metapackages"]) for e in entries} == expected


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
