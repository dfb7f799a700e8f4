"""dtk's Debian package as the tests get it: built by `make deb` (debhelper, pybuild,
dpkg-buildpackage, then lintian, which fails the target on any error or warning) from
this checkout, into a directory of the test session's own."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).parents[2]


def build(out: Path) -> Path:
    done = subprocess.run(["make", "-C", str(ROOT), "deb", f"DEB_OUT={out}"],
                          capture_output=True, text=True, timeout=1800, check=False)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    (deb,) = out.glob("dtk_*.deb")
    return deb


def unpacked(deb: Path, into: Path) -> Path:
    """The package's files (dpkg-deb -x) and its control files (in DEBIAN/)."""
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True, timeout=120)
    subprocess.run(["dpkg-deb", "-e", str(deb), str(into / "DEBIAN")], check=True,
                   timeout=120)
    return into
