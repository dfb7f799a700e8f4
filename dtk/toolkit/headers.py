"""Kernel facts from the kernel's headers package, for kernels without a toolkit.

A toolkit is 1-2 GB; `Module.symvers` and `.config` are all a check strictly
needs, and `linux-headers-<K>` (~2 MB) ships both. What is lost without the
toolkit: the in-tree module list is only the modules that export symbols
(enough for `depends`, which names symbol providers) and the size of
`struct module` is unknown, so that one check is skipped.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from dtk import kernel as kern
from dtk import paths
from dtk.distro import debfile, find_kernel
from dtk.distro.debian import DebianArchive
from dtk.distro.select import open_archive
from dtk.errors import DtkError

_FILES = ("Module.symvers", ".config")


def headers_root(release: str, archive: DebianArchive | None = None) -> Path:
    """A directory laid out like / with K's Module.symvers and .config, cached."""
    root = paths.cache_dir() / "kmod" / "headers" / kern.normalize(release)
    if (root / ".complete").exists():
        return root
    archive = archive or open_archive()
    entry = find_kernel(archive.kernels(), release)
    if not entry.has_headers:
        raise DtkError(f"the archive has no headers package for {release}",
                       hint="check it against a toolkit or --kernel-root instead")
    inner = Path("usr/src") / f"linux-headers-{release}"
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dtk-headers-", dir=root.parent) as tmp:
        work = Path(tmp)
        debfile.fetch_unpacked(archive.index, [f"linux-headers-{release}"], work / "x",
                               work / "debs")
        stage = work / "root"
        (stage / inner).mkdir(parents=True)
        for name in _FILES:
            if not (work / "x" / inner / name).is_file():
                raise DtkError(f"linux-headers-{release} has no {name}")
            shutil.copyfile(work / "x" / inner / name, stage / inner / name)
        (stage / ".complete").touch()
        shutil.rmtree(root, ignore_errors=True)  # a half-written tree from a killed run
        stage.rename(root)
    return root
