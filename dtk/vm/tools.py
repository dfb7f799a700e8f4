"""The guest's userland: a static busybox and kmod, both from the archive.

Why kmod and not busybox's modprobe: KMM's worker runs `modprobe -d DIR` and
relies on `softdep` lines for modulesLoadingOrder; busybox 1.35's modprobe
has neither (`modprobe --help` lists -alrqvsDb only). kmod is dynamically
linked, so it is copied with the libraries its ELF headers name (DT_NEEDED,
followed recursively) and its program interpreter, read with pyelftools —
nothing from the archive is executed on the host.

The result is one cpio archive, cached under a hash of the exact package
versions and their archive checksums.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, cast

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from dtk import rootfs
from dtk.digest import parts_digest
from dtk.distro import debfile
from dtk.distro.aptindex import Stanza
from dtk.distro.debian import DebianArchive, make_pool
from dtk.distro.debver import parse_depends
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.lock import locked
from dtk.vm import cpio
from dtk.vm.cache import vm_cache
from dtk.vm.guest import KMOD_DIR

ROOT_PACKAGES = ("busybox-static", "kmod")
ROOT_PACKAGES_KEY = "dtk-vm-tools-2 " + " ".join(ROOT_PACKAGES)
_LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")
_KMOD_TOOLS = ("modprobe", "insmod", "rmmod", "lsmod", "modinfo", "depmod")


def package_closure(stanzas: dict[str, Stanza], roots: tuple[str, ...]) -> list[Stanza]:
    """Stanzas of `roots` and of everything they depend on (first satisfiable
    alternative; virtual names without a real package are skipped). Pure."""
    chosen: dict[str, Stanza] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in chosen or name not in stanzas:
            continue
        stanza = stanzas[name]
        chosen[name] = stanza
        for group in _depends(stanza):
            real = next((name for name in group if name in stanzas), None)
            if real:
                todo.append(real)
    return sorted(chosen.values(), key=lambda s: s["Package"])


def _newest_stanzas(archive: DebianArchive, names: set[str]) -> dict[str, Stanza]:
    pool = make_pool(s for s in archive.index.stanzas(lambda n: n in names)
                     if s.get("Architecture") in (archive.os.arch, "all"))
    return {name: versions[0] for name, versions in pool.items()}


def _depends(stanza: Stanza) -> list[list[str]]:
    field = ", ".join(f for f in (stanza.get("Pre-Depends"), stanza.get("Depends")) if f)
    return [[rel.name for rel in group] for group in parse_depends(field)]


def resolve_packages(archive: DebianArchive) -> list[Stanza]:
    """The exact packages of the guest userland, read from the archive's index.

    Scanning the indexes (50 MB for bookworm main) once per dependency level
    takes seconds, so the answer is kept until an index file changes; and an
    answer for the indexes already on disk is used without refreshing them (a
    slightly older busybox is as good a guest as the newest).
    """
    saved = _resolved_path(archive)
    if saved is None or not saved.exists():
        archive.index.update()
        saved = _resolved_path(archive)
        assert saved is not None
    if saved.exists():
        return list(json.loads(saved.read_text()))
    stanzas = _resolve(archive)
    write_atomic(saved, json.dumps(stanzas).encode())
    return stanzas


def _resolved_path(archive: DebianArchive) -> Path | None:
    files = archive.index.index_files()
    if not files:
        return None
    stamp = parts_digest(ROOT_PACKAGES_KEY, *(f"{p}:{p.stat().st_mtime_ns}:{p.stat().st_size}"
                                        for p in files))
    return vm_cache() / "tools" / f"resolved-{stamp}.json"


def _resolve(archive: DebianArchive) -> list[Stanza]:
    known: dict[str, Stanza] = {}
    wanted = set(ROOT_PACKAGES)
    while True:  # one index scan per level of the dependency tree
        known.update(_newest_stanzas(archive, wanted - known.keys()))
        more = {name for s in known.values() for group in _depends(s) for name in group}
        if more <= wanted:
            break
        wanted |= more
    missing = [n for n in ROOT_PACKAGES if n not in known]
    if missing:
        raise DtkError(f"the archive has no {', '.join(missing)} package",
                       hint="dtk's VM needs busybox-static and kmod from the configured sources")
    return package_closure(known, ROOT_PACKAGES)


def tools_key(stanzas: list[Stanza]) -> str:
    return parts_digest(ROOT_PACKAGES_KEY, *(f"{s['Package']}={s['Version']} {s.get('SHA256', '')}"
                                       for s in stanzas))


def ensure_tools(archive: DebianArchive) -> Path:
    """The cached userland cpio for the archive's current busybox and kmod."""
    stanzas = resolve_packages(archive)
    target = vm_cache() / "tools" / f"{tools_key(stanzas)}.cpio"
    with locked(target.with_suffix(".lock")):
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(prefix="dtk-vm-tools-") as tmp:
            root = Path(tmp) / "root"
            debfile.fetch_unpacked(archive.index,
                                   [f"{s['Package']}={s['Version']}" for s in stanzas],
                                   root, Path(tmp) / "debs")
            buf = io.BytesIO()
            cpio.write(buf, userland_entries(root))
            write_atomic(target, buf.getvalue())
    return target


def userland_entries(root: Path) -> list[cpio.Entry]:
    """busybox, kmod and its tool links, and the libraries kmod needs."""
    busybox = root / "bin/busybox"
    kmod = next((root / d / "kmod" for d in ("bin", "usr/bin", "sbin", "usr/sbin")
                 if (root / d / "kmod").is_file()), None)
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


def elf_closure(root: Path, executable: Path) -> dict[str, Path]:
    """Guest path → host file for the interpreter and every library `executable`
    needs, following DT_NEEDED through the libraries themselves."""
    found: dict[str, Path] = {}
    todo = [executable]
    while todo:
        interp, needed = _elf_deps(todo.pop())
        if interp and interp not in found:
            found[interp] = _inside(root, interp)
        for soname in needed:
            if any(PurePosixPath(p).name == soname for p in found):
                continue
            guest, host = _find_library(root, soname)
            found[guest] = host
            todo.append(host)
    return found


def _elf_deps(path: Path) -> tuple[str | None, list[str]]:
    with path.open("rb") as f:
        elf = ELFFile(f)
        interp = None
        for segment in elf.iter_segments():
            if isinstance(segment, InterpSegment):
                interp = str(segment.get_interp_name())
        # pyelftools sets `needed` on DT_NEEDED tags only, hence the cast.
        needed = [str(cast(Any, tag).needed) for section in elf.iter_sections()
                  if isinstance(section, DynamicSection)
                  for tag in section.iter_tags() if tag.entry.d_tag == "DT_NEEDED"]
    return interp, needed


def _find_library(root: Path, soname: str) -> tuple[str, Path]:
    for directory in _LIB_DIRS:
        candidate = root / directory / soname
        if candidate.exists() or candidate.is_symlink():
            return f"/{directory}/{soname}", _inside(root, f"/{directory}/{soname}")
    raise DtkError(f"library {soname}, needed by kmod, is in none of the unpacked packages",
                   hint="the archive's kmod dependencies changed; report this to dtk")


def _inside(root: Path, guest_path: str) -> Path:
    """`guest_path` within the unpacked packages, its links resolved as the guest
    would resolve them (through dtk.rootfs: never out of `root`)."""
    host = rootfs.resolve(root, guest_path)
    if host is None or not host.is_file():
        raise DtkError(f"{guest_path} is not a file in the unpacked packages")
    return host
