"""APT source parsing: one-line and deb822, release filtering, refusing trusted=yes."""

from __future__ import annotations

import re
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


# Every option that turns signature checks off (apt's sources.list(5)), with values apt's
# StringToBool (apt-pkg/contrib/strutl.cc) reads as true: strtol(…, 0) giving 1, or one of
# yes/true/with/on/enable in any case.
_UNSAFE_OPTIONS = ("trusted", "allow-insecure", "allow-weak", "allow-downgrade-to-insecure")
_TRUE = ("yes", "true", "TRUE", "Yes", "with", "on", "enable", "1", "01", "0x1", "+1", " 1")
_NOT_TRUE = ("no", "false", "without", "off", "disable", "0", "0x0", "2", "maybe")


@pytest.mark.parametrize("option", _UNSAFE_OPTIONS)
@pytest.mark.parametrize("value", [v for v in _TRUE if " " not in v])
def test_every_one_line_spelling_that_skips_signatures_is_refused(option: str,
                                                                  value: str) -> None:
    entries = aptsources.parse_one_line(f"deb [{option}={value}] {MIRROR} bookworm main")
    with pytest.raises(DtkError, match=re.escape(f"{option}={value}")):
        aptsources.for_release(entries, "bookworm")


@pytest.mark.parametrize("option", ["Trusted", "Allow-Insecure", "allow-weak",
                                    "ALLOW-DOWNGRADE-TO-INSECURE"])
@pytest.mark.parametrize("value", _TRUE)
def test_every_deb822_spelling_that_skips_signatures_is_refused(option: str,
                                                                value: str) -> None:
    entries = aptsources.parse_deb822(f"Types: deb\nURIs: {MIRROR}\nSuites: bookworm\n"
                                      f"{option}: {value}\n")
    with pytest.raises(DtkError, match="signature"):
        aptsources.for_release(entries, "bookworm")


@pytest.mark.parametrize("option", _UNSAFE_OPTIONS)
@pytest.mark.parametrize("value", _NOT_TRUE)
def test_values_apt_reads_as_false_are_kept(option: str, value: str) -> None:
    entries = aptsources.parse_one_line(f"deb [{option}={value}] {MIRROR} bookworm main")
    assert len(aptsources.for_release(entries, "bookworm")) == 1


def test_a_third_party_source_that_skips_signatures_is_refused_too() -> None:
    entries = aptsources.parse_one_line(f"deb {MIRROR} bookworm main\n"
                                        f"deb [allow-insecure=on] {MIRROR}/x stable main")
    with pytest.raises(DtkError, match="allow-insecure=on"):
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
