"""The final stage of a driver image: a tiny root with busybox, built once.

KMM's worker runs `/bin/sh -c "mkdir -p …; cp -R …"` in the image and its pull
check runs `/bin/sh -c "exit 0"`, so `FROM scratch` is not enough; the toolkit
(1-2 GB) is far too much. Debian's `busybox-static` gives sh, cp, mkdir and
modprobe in one static binary of about 2 MB; it comes signature-checked from the
machine's own APT sources, pinned by version in the image tag.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from dtk import paths
from dtk.distro import debfile
from dtk.distro.aptindex import AptIndex
from dtk.distro.debver import sort_key
from dtk.driver.plan import KIND_LABEL, ImageRef
from dtk.engine import buildah
from dtk.errors import DtkError
from dtk.kernel import normalize
from dtk.lock import locked

KMOD_BASE_REPO = "localhost/dtk-kmod-base"
PACKAGE = "busybox-static"
# What KMM runs in the image (sh, mkdir, cp) and what a person debugging it reaches for.
APPLETS = ("sh", "cp", "mkdir", "modprobe", "insmod", "rmmod", "lsmod", "modinfo", "depmod",
           "ls", "cat", "ln", "rm", "find", "uname", "true")


def ensure_base(index: AptIndex, arch: str) -> ImageRef:
    """The base image for the archive's newest busybox-static, built if missing."""
    version = _newest_version(index, arch)
    tag = f"{KMOD_BASE_REPO}:{normalize(version)}"
    with locked(paths.cache_dir() / "locks" / "driver-base", "driver base image"):
        if not buildah.image_exists(tag):
            _build(index, version, tag)
    return ImageRef(tag, buildah.image_id(tag))


def _newest_version(index: AptIndex, arch: str) -> str:
    """busybox-static's newest version, remembered per index refresh: reading
    every Packages file costs about a second, on every `dtk build`."""
    index.update()
    stamp = index.root / "updated"
    memo = index.root / f"dtk-{PACKAGE}-{arch}"
    if memo.exists() and stamp.exists() and memo.stat().st_mtime >= stamp.stat().st_mtime:
        return memo.read_text().strip()
    versions = [s["Version"] for s in index.stanzas(lambda name: name == PACKAGE)
                if s.get("Architecture") == arch]
    if not versions:
        raise DtkError(f"{PACKAGE} is not in the configured archive",
                       hint="driver images need it for /bin/sh, cp, mkdir and modprobe")
    version = max(versions, key=sort_key)
    memo.write_text(version + "\n")
    return version


def _build(index: AptIndex, version: str, tag: str) -> None:
    with tempfile.TemporaryDirectory(prefix="dtk-base-") as tmp:
        unpacked = Path(tmp) / "root"
        debfile.fetch_unpacked(index, [f"{PACKAGE}={version}"], unpacked, Path(tmp) / "debs")
        busybox = unpacked / "bin/busybox"
        with buildah.working_container("scratch") as ctr:
            with ctr.mounted() as root:
                for directory in ("bin", "sbin", "tmp", "opt", "firmware", "etc"):
                    (root / directory).mkdir(mode=0o755, exist_ok=True)
                (root / "tmp").chmod(0o1777)
                shutil.copy2(busybox, root / "bin/busybox")
                for applet in APPLETS:
                    (root / "bin" / applet).symlink_to("busybox")
                (root / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
            ctr.config("--label", f"{KIND_LABEL}=base", "--label",
                       f"dtk.build.busybox={version}", "--cmd", "/bin/sh",
                       "--env", "PATH=/bin:/sbin")
            ctr.commit(tag)
