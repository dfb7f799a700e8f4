"""Debian package files: the one way dtk fetches packages and unpacks them into a tree.

`dpkg-deb -x` unpacks the data only: no maintainer script of a package ever
runs on the host (a package is input, not code to trust).
"""

from __future__ import annotations

from pathlib import Path

from dtk import run as runner
from dtk.distro.aptindex import AptIndex

_UNPACK_TIMEOUT_S = 600


def unpack(deb: Path, dest: Path) -> None:
    """Unpack one .deb's files into `dest` (created if missing)."""
    runner.run(["dpkg-deb", "-x", str(deb), str(dest)], timeout=_UNPACK_TIMEOUT_S,
               what=f"unpacking {deb.name} failed")


def fetch_unpacked(index: AptIndex, packages: list[str], dest: Path, work: Path) -> list[Path]:
    """Download `packages` (apt specs: name or name=version) into `work` and unpack
    them all into `dest`; the downloaded files, in order."""
    debs = index.download(packages, work)
    for deb in debs:
        unpack(deb, dest)
    return debs


def control_field(deb: Path, name: str) -> str:
    """One field of a package's control data ('' when it has none)."""
    return runner.run(["dpkg-deb", "-f", str(deb), name], timeout=60).stdout.strip()
