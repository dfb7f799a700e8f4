"""The kernel query language (`--kernels`) against a catalog, and `dtk build`'s build args."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtk.cli.buildreq import parse_build_args
from dtk.distro import KernelEntry
from dtk.distro.query import query_kernels
from dtk.errors import DtkError


def entry(release: str, flavour: str, line: str) -> KernelEntry:
    return KernelEntry(release, flavour, line, f"linux-image-{release}", "1", "linux", "1")


# Newest first, as the catalog is.
CATALOG = [entry("6.12.117+deb12-rt-amd64", "rt", "6.12"),
           entry("6.12.117+deb12-amd64", "standard", "6.12"),
           entry("6.1.0-56-rt-amd64", "rt", "6.1"),
           entry("6.1.0-56-amd64", "standard", "6.1"),
           entry("6.1.0-55-rt-amd64", "rt", "6.1"),
           entry("6.1.0-55-amd64", "standard", "6.1")]


def test_flavour_and_latest() -> None:
    assert query_kernels("rt,latest", CATALOG) == ["6.12.117+deb12-rt-amd64",
                                                   "6.1.0-56-rt-amd64"]


def test_line_and_flavours_combine() -> None:
    assert query_kernels("6.1,standard", CATALOG) == ["6.1.0-56-amd64", "6.1.0-55-amd64"]
    assert query_kernels("6.1,standard,rt,latest", CATALOG) == ["6.1.0-56-rt-amd64",
                                                                "6.1.0-56-amd64"]
    assert len(query_kernels("all", CATALOG)) == len(CATALOG)


def test_kernel_file(tmp_path: Path) -> None:
    listing = tmp_path / "kernels.txt"
    listing.write_text("# fleet\n6.1.0-56-amd64\n\n6.1.0-56-rt-amd64  # RT nodes\n")
    assert query_kernels(f"@{listing}", CATALOG) == ["6.1.0-56-amd64", "6.1.0-56-rt-amd64"]


def test_unknown_query_word_is_a_user_error() -> None:
    with pytest.raises(DtkError, match="'newest' is not a flavour"):
        query_kernels("rt,newest", CATALOG)


def test_build_args() -> None:
    assert parse_build_args(("A=1", "B=x=y", "C=")) == (("A", "1"), ("B", "x=y"), ("C", ""))
    with pytest.raises(DtkError, match="is not KEY=VALUE"):
        parse_build_args(("novalue",))


def test_kernel_file_that_is_missing_or_a_directory_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(DtkError, match="does not exist"):
        query_kernels(f"@{tmp_path / 'nope.txt'}", CATALOG)
    with pytest.raises(DtkError, match="is a directory"):
        query_kernels(f"@{tmp_path}", CATALOG)
