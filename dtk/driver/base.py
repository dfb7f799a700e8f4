"""The final stage of a driver image (DTK_BASE): busybox plus kmod, built once.

KMM's worker runs `/bin/sh -c "mkdir -p …; cp -R …"` in the image and its pull
check runs `/bin/sh -c "exit 0"`, so `FROM scratch` is not enough; the toolkit
(1-2 GB) is far too much. Debian's `busybox-static` gives sh, cp, mkdir and the
rest in one static binary. `/bin/sh` is Debian's dash, not busybox's ash:
Debian builds busybox with FEATURE_SH_STANDALONE, so its ash runs its own
`depmod` and `modprobe` applets whatever PATH says.

The module tools are kmod's, not busybox's: KMM's docs end their Dockerfiles
with `RUN depmod -b /opt` in the final stage, and busybox's depmod writes only
the text `modules.dep`, while kmod's `modprobe -d /opt` (KMM's worker, `dtk
vmtest`) reads `modules.dep.bin` and otherwise says "Module x not found". kmod
is dynamically linked, so it comes with the libraries its ELF headers name
(`dtk.distro.userland`). `depmod` is a small wrapper (dtk/data/depmod-wrapper.sh)
around kmod's: without a kernel version it indexes the one kernel directory
under `-b`'s lib/modules instead of the build host's `uname -r`.

Packages come signature-checked from the machine's own APT sources; the tag is
a hash of their exact versions and of the wrapper.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from dtk import paths, scripts
from dtk.digest import parts_digest
from dtk.distro import debfile, userland
from dtk.distro.aptindex import AptIndex, Stanza
from dtk.driver.plan import KIND_LABEL, ImageRef
from dtk.engine import buildah
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.lock import locked

KMOD_BASE_REPO = "localhost/dtk-kmod-base"
ROOTS = ("busybox-static", "kmod", "dash")
RECIPE = "dtk-kmod-base/3"
# What KMM runs in the image (sh, mkdir, cp) and what a person debugging it reaches for.
APPLETS = ("cp", "mkdir", "ls", "cat", "ln", "rm", "find", "uname", "true", "basename",
           "echo", "test", "[")
KMOD_TOOLS = ("modprobe", "insmod", "rmmod", "lsmod", "modinfo")
REAL_DEPMOD = "/usr/libexec/dtk/depmod"


def ensure_base(index: AptIndex, arch: str, *,
                fetch: Callable[[str], None] | None = None) -> ImageRef:
    """The base image for the archive's newest busybox-static and kmod, built if missing
    (`fetch(tag)` may bring it from elsewhere first: a shared build cache)."""
    stanzas = _resolved(index, arch)
    tag = f"{KMOD_BASE_REPO}:{base_key(stanzas)[7:27]}"
    with locked(paths.cache_dir() / "locks" / "driver-base", "driver base image"):
        if fetch is not None and not buildah.image_exists(tag):
            fetch(tag)
        if not buildah.image_exists(tag):
            _build(index, stanzas, tag)
    return ImageRef(tag, buildah.image_id(tag))


def base_key(stanzas: list[Stanza]) -> str:
    return parts_digest(RECIPE, scripts.text("depmod-wrapper.sh"),
                        *(f"{s['Package']}={s['Version']}" for s in stanzas))


def _resolved(index: AptIndex, arch: str) -> list[Stanza]:
    """The package closure, remembered per index refresh: reading every Packages
    file costs seconds, on every `dtk build`."""
    index.update()
    stamp = index.root / "updated"
    memo = index.root / f"dtk-kmod-base-{arch}-{parts_digest(*ROOTS)[7:19]}.json"
    if memo.exists() and stamp.exists() and memo.stat().st_mtime >= stamp.stat().st_mtime:
        return list(json.loads(memo.read_text()))
    stanzas = userland.resolve_closure(index, arch, ROOTS)
    write_atomic(memo, json.dumps(stanzas).encode())  # another dtk may read it now
    return stanzas


def _build(index: AptIndex, stanzas: list[Stanza], tag: str) -> None:
    with tempfile.TemporaryDirectory(prefix="dtk-base-") as tmp:
        unpacked = Path(tmp) / "root"
        debfile.fetch_unpacked(index, [f"{s['Package']}={s['Version']}" for s in stanzas],
                               unpacked, Path(tmp) / "debs")
        busybox = unpacked / "bin/busybox"
        kmod, dash = (userland.find_binary(unpacked, n) for n in ("kmod", "dash"))
        if not busybox.is_file() or kmod is None or dash is None:
            raise DtkError("busybox-static, kmod or dash did not unpack as expected",
                           hint="dtk expects /bin/busybox, kmod and dash in those packages")
        libs = {**userland.elf_closure(unpacked, kmod), **userland.elf_closure(unpacked, dash)}
        with buildah.working_container("scratch") as ctr:
            with ctr.mounted() as root:
                _populate(root, busybox, (kmod, dash), libs)
            versions = ",".join(f"{s['Package']}={s['Version']}" for s in stanzas
                                if s["Package"] in ROOTS)
            ctr.config("--label", f"{KIND_LABEL}=base", "--label",
                       f"dtk.build.base-packages={versions}", "--cmd", "/bin/sh",
                       "--env", "PATH=/bin:/sbin")
            ctr.commit(tag)


def _populate(root: Path, busybox: Path, tools: tuple[Path, Path],
              libs: dict[str, Path]) -> None:
    kmod, dash = tools
    for directory in ("bin", "sbin", "tmp", "opt", "firmware", "etc", "usr/libexec/dtk"):
        (root / directory).mkdir(mode=0o755, parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(busybox, root / "bin/busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    shutil.copy2(kmod, root / "bin/kmod")
    shutil.copy2(dash, root / "bin/dash")
    (root / "bin/sh").symlink_to("dash")
    for inner, host in libs.items():
        target = root / inner.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host, target)
    for tool in KMOD_TOOLS:  # kmod picks the tool by the name it is called as
        (root / "bin" / tool).symlink_to("kmod")
        (root / "sbin" / tool).symlink_to("../bin/kmod")
    (root / REAL_DEPMOD.lstrip("/")).symlink_to("../../../bin/kmod")
    wrapper = root / "bin/depmod"
    wrapper.write_text(scripts.text("depmod-wrapper.sh"))
    wrapper.chmod(0o755)
    (root / "sbin/depmod").symlink_to("../bin/depmod")
    (root / "etc/passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
