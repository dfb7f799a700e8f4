"""Planning's view of a DKMS tree: names and versions dkms would put in paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtk.driver.dkmsconf import parse_records
from dtk.driver.sources import DkmsTree, package_from_conf
from dtk.errors import DtkError


def records(**values: str) -> bytes:
    return b"".join(f"{k}\0{0}\0{v}\0".encode() for k, v in values.items())


@pytest.mark.parametrize(("name", "version"), [
    ("../../etc", "1.0"), ("hello", "1.0/../../x"), ("hello", "1:2"), ("a b", "1"),
    ("-rf", "1"), ("hello", ""),
])
def test_names_and_versions_that_would_leave_their_paths(tmp_path: Path, name: str,
                                                         version: str) -> None:
    conf = parse_records(records(PACKAGE_NAME=name, PACKAGE_VERSION=version or "."))
    with pytest.raises(DtkError, match="which dkms would use in a path"):
        package_from_conf(DkmsTree(tmp_path, "test"), conf)


def test_real_package_names_and_versions_pass(tmp_path: Path) -> None:
    for name, version in (("v4l2loopback", "0.12.7"), ("openafs", "1.8.9pre1"),
                          ("xtables-addons", "3.23"), ("dahdi", "1:3.1.0+dfsg"[2:]),
                          ("lttng-modules", "2.13.8~rc1")):
        conf = parse_records(records(PACKAGE_NAME=name, PACKAGE_VERSION=version))
        pkg = package_from_conf(DkmsTree(tmp_path, "test"), conf)
        assert (pkg.name, pkg.version) == (name, version)
