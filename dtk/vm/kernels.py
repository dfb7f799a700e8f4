"""The kernel side of a VM: where K's files come from, and what is cached of them.

A kernel comes from K's toolkit image when one is in local storage (nothing to
download), else from K's `linux-image` package in the archive (70-110 MB,
signature-checked by apt; far lighter than building a toolkit just to boot).

Cached per kernel, under a key that identifies the content (the toolkit's image
id, or the package's SHA256 from the signed index), so nothing is re-extracted
while the kernel is unchanged and a rebuilt toolkit is never served stale:

    vm/kernels/<key>/vmlinux        ELF kernel for qemu's PVH entry
    vm/kernels/<key>/vmlinuz        the package's own image, as signed (Secure Boot boots,
                                    and the boot image when it has no PVH entry)
    vm/kernels/<key>/modules/       K's modules.* index files (text and .bin)
    vm/kernels/<key>/sets/<h>.cpio  in-tree modules a driver needs, as an archive
"""

from __future__ import annotations

import fcntl
import io
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from dtk import kernel as kern
from dtk import rootfs
from dtk import run as runner
from dtk.digest import parts_digest
from dtk.distro import debfile, unknown_kernel
from dtk.distro.debian import DebianArchive
from dtk.engine import buildah
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.kernel import bzimage
from dtk.kernel.modules_dep import ModulesDep, builtin_names, parse_modules_dep
from dtk.lock import locked
from dtk.toolkit import locate
from dtk.vm import cpio, reach
from dtk.vm.cache import vm_cache

ArchiveOpener = Callable[[], DebianArchive]


@dataclass(frozen=True)
class KernelSource:
    release: str
    origin: str  # for people: "toolkit localhost/driver-toolkit:…" / "package linux-image-…"
    key: str  # content identity
    image: str | None = None
    package: str | None = None  # "name=version"


@dataclass(frozen=True)
class KernelParts:
    """What is cached of one kernel."""

    source: KernelSource
    boot_image: Path
    pvh: bool  # boot_image is an ELF vmlinux (else a bzImage)
    modules_dir: Path

    @property
    def signed_image(self) -> Path:
        """/boot/vmlinuz-K as the package has it: what GRUB and shim verify."""
        return self.boot_image.parent / "vmlinuz"

    @property
    def release(self) -> str:
        return self.source.release

    @cached_property
    def modules_dep(self) -> ModulesDep:
        return parse_modules_dep(_read(self.modules_dir / "modules.dep"))

    @cached_property
    def builtin(self) -> set[str]:
        return builtin_names(_read(self.modules_dir / "modules.builtin"))

    @cached_property
    def index(self) -> reach.ModuleIndex:
        return reach.ModuleIndex(self.modules_dep,
                                 reach.parse_softdeps(_read(self.modules_dir / "modules.softdep")),
                                 reach.parse_aliases(_read(self.modules_dir / "modules.alias")))


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def find_toolkit_image(release: str) -> tuple[str, str] | None:
    """(name, image id) of a local toolkit that holds `release`, standard or RT."""
    try:
        return locate.find_toolkit(release)
    except DtkError:
        return None


def find_source(release: str, archive: ArchiveOpener) -> KernelSource:
    kern.parse(release)
    toolkit = find_toolkit_image(release)
    if toolkit:
        name, image_id = toolkit
        return KernelSource(release, f"toolkit {name}", f"image-{image_id[:24]}", image=name)
    arch = archive()
    entry = next((e for e in arch.kernels() if e.release == release), None)
    if entry is None:
        raise unknown_kernel(arch.kernels(), release)
    stanza = next(s for s in arch.pool[entry.image_package] if s["Version"] == entry.version)
    key = "deb-" + (stanza.get("SHA256") or parts_digest(entry.image_package, entry.version))[:24]
    return KernelSource(release, f"package {entry.image_package} {entry.version}", key,
                        package=f"{entry.image_package}={entry.version}")


@contextmanager
def opened(source: KernelSource, archive: ArchiveOpener) -> Iterator[Path]:
    """A root holding boot/vmlinuz-K and lib/modules/K, for the block only."""
    if source.image:
        with buildah.working_container(source.image) as ctr, ctr.mounted() as root:
            yield root
        return
    assert source.package is not None
    with tempfile.TemporaryDirectory(prefix="dtk-vm-kernel-") as tmp:
        root = Path(tmp) / "root"
        debfile.fetch_unpacked(archive().index, [source.package], root, Path(tmp) / "debs")
        # The package ships no modules.dep: its postinst runs depmod.
        runner.run(["depmod", "-b", str(root), source.release], timeout=300,
                   what=f"depmod for {source.release} failed")
        yield root


# The marker of a complete entry; a new name when what an entry holds changes (2: the
# signed vmlinuz is kept beside the PVH vmlinux), so older entries are filled again.
_COMPLETE = "complete-2"


def _kernel_dir(source: KernelSource) -> Path:
    return vm_cache() / "kernels" / source.key / source.release


@contextmanager
def using_kernel(source: KernelSource, archive: ArchiveOpener) -> Iterator[KernelParts]:
    """The cached boot image and module indexes of a kernel (extracted once),
    kept for the block: a shared lock on the entry holds off another run's
    pruning while this one builds its initramfs and boots from it."""
    base = _kernel_dir(source)
    lock = base.parent / f"{source.release}.lock"
    while True:
        with locked(lock):
            if not (base / _COMPLETE).exists():
                with opened(source, archive) as root:
                    _extract(root, source.release, base)
                write_atomic(base / _COMPLETE, (source.origin + "\n").encode())
                _prune_other_keys(source)
        with locked(lock, shared=True):
            # Between the two locks a pruner may have taken the entry: fill it again.
            if (base / _COMPLETE).exists():
                pvh = (base / "vmlinux").exists()
                yield KernelParts(source, base / ("vmlinux" if pvh else "vmlinuz"), pvh,
                                  base / "modules")
                return


def _prune_other_keys(source: KernelSource) -> None:
    """Drop this release's parts cached under other keys (a rebuilt toolkit, or the
    package before a toolkit existed): the same kernel, 70 MB each. One that
    another dtk is filling (exclusive lock) or using (shared lock) is left alone."""
    for other in (vm_cache() / "kernels").glob(f"*/{source.release}"):
        if other.parent.name == source.key:
            continue
        lock = other.parent / f"{source.release}.lock"
        with lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            shutil.rmtree(other, ignore_errors=True)


def _extract(root: Path, release: str, base: Path) -> None:
    vmlinuz = rootfs.resolve(root, f"/boot/vmlinuz-{release}")
    moddir = rootfs.resolve(root, f"/lib/modules/{release}")
    if vmlinuz is None or not vmlinuz.is_file():
        raise DtkError(f"no /boot/vmlinuz-{release} in the kernel's files",
                       hint="the toolkit or package does not contain this kernel's image")
    if moddir is None or rootfs.resolve(root, f"/lib/modules/{release}/modules.dep") is None:
        raise DtkError(f"no /lib/modules/{release}/modules.dep in the kernel's files")
    image = vmlinuz.read_bytes()
    try:
        elf: bytes | None = bzimage.extract_vmlinux(image)
    except bzimage.UnsupportedCompressionError:
        elf = None  # still bootable, only slower: the bzImage decompresses itself
    write_atomic(base / "vmlinuz", image)
    if elf is not None and bzimage.has_pvh_note(elf):
        write_atomic(base / "vmlinux", elf)  # else qemu boots the bzImage: no PVH entry
    (base / "modules").mkdir(parents=True, exist_ok=True)
    for name in sorted(p.name for p in moddir.iterdir() if p.name.startswith("modules.")):
        host = rootfs.resolve(root, f"/lib/modules/{release}/{name}")
        if host is not None and host.is_file():
            write_atomic(base / "modules" / name, host.read_bytes())


# Bump when what a set holds changes: sets are cached under their inputs.
_SET_VERSION = "reach-1"


def module_set(parts: KernelParts, names: list[str], requests: list[str],
               archive: ArchiveOpener) -> Path | None:
    """An archive of K's modules at /lib/modules/K, with K's index files: `names`,
    what the driver's own modules ask for (`requests`: softdeps, crypto-NAME),
    and everything those reach (see dtk.vm.reach); None when nothing is needed.

    Cached under its inputs, not its paths: which modules are reached is only
    known after reading their strings, which needs K's files."""
    wanted = sorted(set(names)), sorted(set(requests))
    if not any(parts.index.resolve(n) for n in (*wanted[0], *wanted[1])):
        return None
    target = parts.modules_dir.parent / "sets" / \
        f"{parts_digest(_SET_VERSION, *wanted[0], '--', *wanted[1])}.cpio"
    with locked(parts.modules_dir.parent / "sets.lock"):
        if not target.exists():
            with opened(parts.source, archive) as root:
                rel_paths = reach.reach(parts.index, [*wanted[0], *wanted[1]],
                                        lambda rel: _requests_in(root, parts.release, rel))
                write_atomic(target, _module_archive(root, parts, rel_paths))
    return target


def _requests_in(root: Path, release: str, rel: str) -> list[str]:
    host = rootfs.resolve(root, f"/lib/modules/{release}/{rel}")
    if host is None or not host.is_file():
        return []  # _module_archive reports the missing file
    return reach.requests_of(host.read_bytes(), rel)


def _module_archive(root: Path, parts: KernelParts, rel_paths: list[str]) -> bytes:
    prefix = f"/lib/modules/{parts.release}"
    entries = [cpio.file(f"{prefix}/{index.name}", index.read_bytes())
               for index in sorted(parts.modules_dir.iterdir())]
    for rel in rel_paths:
        # Paths come from the kernel's modules.dep: resolved inside its root, never out.
        host = rootfs.resolve(root, f"{prefix}/{rel}")
        if host is None or not host.is_file():
            raise DtkError(f"{prefix}/modules.dep names {rel}, which the kernel's files lack")
        entries.append(cpio.file(f"{prefix}/{rel}", host.read_bytes()))
    buf = io.BytesIO()
    cpio.write(buf, entries)
    return buf.getvalue()

