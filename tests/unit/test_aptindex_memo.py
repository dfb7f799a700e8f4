"""The memo of an index's selected stanzas: read again only when a Packages file changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dtk.distro.aptindex import AptIndex
from dtk.distro.aptsources import parse_one_line

STANZAS = "Package: linux-image-6.1.0-57-amd64\nVersion: 6.1.192-3\n\nPackage: vim\nVersion: 9\n"


def _index(tmp_path: Path) -> tuple[AptIndex, Path]:
    index = AptIndex(parse_one_line("deb http://mirror.example/debian bookworm main"), tmp_path)
    lists = index.root / "state/lists"
    lists.mkdir(parents=True)
    packages = lists / "mirror.invalid_debian_dists_bookworm_main_binary-amd64_Packages"
    packages.write_text(STANZAS)
    return index, packages


def _linux(name: str) -> bool:
    return name.startswith("linux-")


def test_memo_answers_until_an_index_file_changes(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    index, packages = _index(tmp_path)
    first = index.remembered_stanzas(_linux, "linux")
    assert [s["Package"] for s in first] == ["linux-image-6.1.0-57-amd64"]

    def unread(_want: object) -> None:
        raise AssertionError("the Packages files were read again")
    with monkeypatch.context() as patch:
        patch.setattr(index, "stanzas", unread)
        assert index.remembered_stanzas(_linux, "linux") == first

    packages.write_text(STANZAS + "\nPackage: linux-image-6.1.0-58-amd64\nVersion: 6.1.193-1\n")
    os.utime(packages, ns=(1, 1))  # a refresh may keep the size; the mtime differs
    again = index.remembered_stanzas(_linux, "linux")
    assert [s["Package"] for s in again] == ["linux-image-6.1.0-57-amd64",
                                            "linux-image-6.1.0-58-amd64"]
    assert len(list((index.root / "memo").glob("linux-*.json"))) == 1  # the old one is gone


def test_a_corrupt_memo_is_read_as_missing(tmp_path: Path) -> None:
    index, _packages = _index(tmp_path)
    index.remembered_stanzas(_linux, "linux")
    for memo in (index.root / "memo").glob("*.json"):
        memo.write_text("{not json")
    assert [s["Package"] for s in index.remembered_stanzas(_linux, "linux")] \
        == ["linux-image-6.1.0-57-amd64"]
