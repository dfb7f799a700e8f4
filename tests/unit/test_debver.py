"""Debian version ordering, checked against dpkg itself (dpkg is on every Debian host)."""

from __future__ import annotations

import itertools
import subprocess

import pytest

from dtk.distro.debver import Relation, compare, parse_depends

VERSIONS = ["6.1.192-2", "6.1.170-3", "6.1.192-1", "6.12.117-1~deb12u1", "6.12.117-1",
            "1:0.1", "0.1~rc1", "0.1", "12.2.0-14+deb12u1", "12.2.0-14", "1.0a", "1.0+",
            "1.0.0", "1.0-1.1", "1.0-1", "2.0~~", "2.0~"]


@pytest.mark.parametrize(("a", "b"), list(itertools.combinations(VERSIONS, 2)))
def test_agrees_with_dpkg(a: str, b: str) -> None:
    c = compare(a, b)
    for op, expected in (("lt", c < 0), ("eq", c == 0), ("gt", c > 0)):
        # dpkg is the reference implementation; this is reading, not mocking.
        ok = subprocess.run(["dpkg", "--compare-versions", a, op, b], check=False).returncode
        assert (ok == 0) == expected, f"{a} {op} {b}"


def test_parse_depends() -> None:
    groups = parse_depends("linux-headers-6.1.0-56-common (= 6.1.192-2), "
                           "linux-kbuild-6.1 (>= 6.1.192-2), gcc-12 | gcc:amd64")
    assert groups[0] == [Relation("linux-headers-6.1.0-56-common", "=", "6.1.192-2")]
    assert groups[1][0].satisfied_by("6.1.193-1")
    assert not groups[1][0].satisfied_by("6.1.170-3")
    assert [r.name for r in groups[2]] == ["gcc-12", "gcc"]
