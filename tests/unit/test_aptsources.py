"""APT source parsing: one-line and deb822, release filtering, refusing trusted=yes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtk.distro import aptsources
from dtk.errors import DtkError

MIRROR = "http://mirror.example/debian"  # example.* names no real mirror

DEB822 = f"""Types: deb
URIs: {MIRROR}
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://other.example/node
Suites: nodistro
Components: main
Enabled: yes

Types: deb-src
URIs: {MIRROR}
Suites: bookworm
Components: main
"""


def test_deb822_and_release_filter(tmp_path: Path) -> None:
    path = tmp_path / "x.sources"
    path.write_text(DEB822)
    entries = aptsources.parse_file(path)
    assert len(entries) == 3
    assert aptsources.guess_codename(entries) == "bookworm"
    kept = aptsources.for_release(entries, "bookworm")
    assert len(kept) == 1 and kept[0].suites == ("bookworm", "bookworm-updates")
    text = aptsources.render(kept)
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in text
    assert aptsources.parse_deb822(text) == kept


def test_one_line(tmp_path: Path) -> None:
    path = tmp_path / "x.list"
    path.write_text(f"# comment\ndeb [signed-by=/k.gpg arch=amd64] {MIRROR} bookworm main contrib\n"
                    f"deb {MIRROR}-security bookworm-security main\n")
    entries = aptsources.parse_file(path)
    assert entries[0].options == (("Signed-By", "/k.gpg"), ("Architectures", "amd64"))
    assert entries[0].components == ("main", "contrib")
    assert entries[1].suites == ("bookworm-security",)


def test_disabled_stanza_is_ignored() -> None:
    assert aptsources.parse_deb822(f"Types: deb\nURIs: {MIRROR}\nSuites: x\nEnabled: no\n") == []


def test_trusted_yes_is_refused() -> None:
    entries = aptsources.parse_one_line(f"deb [trusted=yes] {MIRROR} bookworm main")
    with pytest.raises(DtkError, match="trusted=yes"):
        aptsources.for_release(entries, "bookworm")


def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.list"
    path.write_text("deb\n")
    with pytest.raises(DtkError, match=r"bad.list:1"):
        aptsources.parse_file(path)


def test_missing_file() -> None:
    with pytest.raises(DtkError, match="cannot read"):
        aptsources.parse_file(Path("/nonexistent/sources.list"))


def test_no_source_for_release() -> None:
    entries = aptsources.parse_one_line(f"deb {MIRROR} trixie main")
    with pytest.raises(DtkError, match="bookworm"):
        aptsources.for_release(entries, "bookworm")
