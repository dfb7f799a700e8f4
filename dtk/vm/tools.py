"""The guest's userland: a static busybox and kmod, both from the archive.

Why kmod and not busybox's modprobe: KMM's worker runs `modprobe -d DIR` and
relies on `softdep` lines for modulesLoadingOrder; busybox 1.35's modprobe
has neither (`modprobe --help` lists -alrqvsDb only). kmod is dynamically
linked, so it is copied with the libraries its ELF headers name
(`dtk.distro.userland`, shared with driver images' base) — nothing from the
archive is executed on the host.

The result is one cpio archive, cached under a hash of the exact package
versions and their archive checksums.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from dtk.digest import parts_digest
from dtk.distro import debfile
from dtk.distro.aptindex import Stanza
from dtk.distro.debian import DebianArchive
from dtk.distro.userland import elf_closure, find_binary, resolve_closure
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.lock import locked
from dtk.vm import cpio
from dtk.vm.cache import vm_cache
from dtk.vm.guest import KMOD_DIR

ROOT_PACKAGES = ("busybox-static", "kmod")
ROOT_PACKAGES_KEY = "dtk-vm-tools-2 " + " ".join(ROOT_PACKAGES)
_KMOD_TOOLS = ("modprobe", "insmod", "rmmod", "lsmod", "modinfo", "depmod")


def resolve_packages(archive: DebianArchive, roots: tuple[str, ...] = ROOT_PACKAGES
                     ) -> list[Stanza]:
    """The exact packages of the guest userland, read from the archive's index.

    Scanning the indexes (50 MB for bookworm main) once per dependency level
    takes seconds, so the answer is kept until an index file changes; and an
    answer for the indexes already on disk is used without refreshing them (a
    slightly older busybox is as good a guest as the newest).
    """
    saved = _resolved_path(archive, roots)
    if saved is None or not saved.exists():
        archive.index.update()
        saved = _resolved_path(archive, roots)
        assert saved is not None
    if saved.exists():
        return list(json.loads(saved.read_text()))
    stanzas = resolve_closure(archive.index, archive.os.arch, roots)
    write_atomic(saved, json.dumps(stanzas).encode())
    return stanzas


def _roots_key(roots: tuple[str, ...]) -> str:
    return ROOT_PACKAGES_KEY if roots == ROOT_PACKAGES else "dtk-vm-extra-1 " + " ".join(roots)


def _resolved_path(archive: DebianArchive, roots: tuple[str, ...]) -> Path | None:
    files = archive.index.index_files()
    if not files:
        return None
    stamp = parts_digest(_roots_key(roots), *(f"{p}:{p.stat().st_mtime_ns}:{p.stat().st_size}"
                                              for p in files))
    return vm_cache() / "tools" / f"resolved-{stamp}.json"


def tools_key(stanzas: list[Stanza], roots: tuple[str, ...] = ROOT_PACKAGES) -> str:
    return parts_digest(_roots_key(roots), *(f"{s['Package']}={s['Version']} "
                                             f"{s.get('SHA256', '')}" for s in stanzas))


def ensure_tools(archive: DebianArchive) -> Path:
    """The cached userland cpio for the archive's current busybox and kmod."""
    return _ensure(archive, ROOT_PACKAGES, userland_entries)


# What a guest importing a MOK needs beside the userland, as `mokutil --import` runs on a
# Secure Boot machine (it writes MokNew and MokAuth through efivarfs).
MOK_PACKAGES = ("mokutil",)


def ensure_mokutil(archive: DebianArchive) -> Path:
    """The cached cpio of mokutil and the libraries its ELF headers name."""
    return _ensure(archive, MOK_PACKAGES, lambda root: binary_entries(root, "mokutil"))


def _ensure(archive: DebianArchive, roots: tuple[str, ...],
            entries: Callable[[Path], list[cpio.Entry]]) -> Path:
    stanzas = resolve_packages(archive, roots)
    target = vm_cache() / "tools" / f"{tools_key(stanzas, roots)}.cpio"
    with locked(target.with_suffix(".lock")):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(prefix="dtk-vm-tools-") as tmp:
            root = Path(tmp) / "root"
            debfile.fetch_unpacked(archive.index,
                                   [f"{s['Package']}={s['Version']}" for s in stanzas],
                                   root, Path(tmp) / "debs")
            buf = io.BytesIO()
            cpio.write(buf, entries(root))
            write_atomic(target, buf.getvalue())
    return target


def binary_entries(root: Path, name: str) -> list[cpio.Entry]:
    """One program at /usr/bin/NAME and the libraries it needs (nothing run)."""
    found = find_binary(root, name)
    if found is None:
        raise DtkError(f"{name} did not unpack as expected", hint=f"dtk expects a {name} "
                       "binary in its package")
    entries = [cpio.file(f"/usr/bin/{name}", found.read_bytes(), 0o755)]
    entries += [cpio.file(guest_path, host_path.read_bytes(), 0o755)
                for guest_path, host_path in sorted(elf_closure(root, found).items())]
    return entries


def userland_entries(root: Path) -> list[cpio.Entry]:
    """busybox, kmod and its tool links, and the libraries kmod needs."""
    busybox = root / "bin/busybox"
    kmod = find_binary(root, "kmod")
    if not busybox.is_file() or kmod is None:
        raise DtkError("busybox-static or kmod did not unpack as expected",
                       hint="dtk expects /bin/busybox and a kmod binary in those packages")
    kmod_path = "/" + str(kmod.relative_to(root))
    entries = [cpio.file("/bin/busybox", busybox.read_bytes(), 0o755),
               cpio.file(kmod_path, kmod.read_bytes(), 0o755)]
    entries += [cpio.symlink(f"{KMOD_DIR}/{tool}", kmod_path) for tool in _KMOD_TOOLS]
    for guest_path, host_path in sorted(elf_closure(root, kmod).items()):
        entries.append(cpio.file(guest_path, host_path.read_bytes(), 0o755))
    entries.append(cpio.chardev("/dev/console", 5, 1))
    return entries
