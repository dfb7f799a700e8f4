"""One version for dtk, its wheel and its Debian package (debian/changelog names the
package's): a release bumps all three or the package lies about what it holds."""

from __future__ import annotations

import tomllib
from pathlib import Path

from dtk import __version__

ROOT = Path(__file__).parents[2]


def test_the_debian_package_and_the_wheel_carry_dtks_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == __version__
    first = (ROOT / "debian/changelog").read_text().splitlines()[0]
    assert first.startswith(f"dtk ({__version__}) "), first
