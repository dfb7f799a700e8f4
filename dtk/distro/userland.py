"""A small userland from the archive: a package closure and an ELF library closure.

Driver images (dtk.driver.base) and VM guests (dtk.vm.tools) both ship
Debian's `busybox-static` and `kmod`. kmod is dynamically linked, so it is
copied with the libraries its ELF headers name (DT_NEEDED, followed
recursively) and its program interpreter, read with pyelftools: nothing from
the archive is executed on the host.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, cast

from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.segments import InterpSegment

from dtk import rootfs
from dtk.distro.aptindex import AptIndex, Stanza
from dtk.distro.debian import make_pool
from dtk.distro.debver import parse_depends
from dtk.errors import DtkError

LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib", "usr/lib")
BIN_DIRS = ("bin", "usr/bin", "sbin", "usr/sbin")


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
        for group in depends(stanza):
            real = next((name for name in group if name in stanzas), None)
            if real:
                todo.append(real)
    return sorted(chosen.values(), key=lambda s: s["Package"])


def depends(stanza: Stanza) -> list[list[str]]:
    field = ", ".join(f for f in (stanza.get("Pre-Depends"), stanza.get("Depends")) if f)
    return [[rel.name for rel in group] for group in parse_depends(field)]


def _newest_stanzas(index: AptIndex, arch: str, names: set[str]) -> dict[str, Stanza]:
    pool = make_pool(s for s in index.stanzas_of(sorted(names))
                     if s.get("Architecture") in (arch, "all"))
    return {name: versions[0] for name, versions in pool.items()}


def resolve_closure(index: AptIndex, arch: str, roots: tuple[str, ...]) -> list[Stanza]:
    """The newest stanzas of `roots` and their dependencies (the index read once per
    process: `AptIndex.stanzas_of`)."""
    known: dict[str, Stanza] = {}
    wanted = set(roots)
    while True:
        known.update(_newest_stanzas(index, arch, wanted - known.keys()))
        more = {name for s in known.values() for group in depends(s) for name in group}
        if more <= wanted:
            break
        wanted |= more
    missing = [n for n in roots if n not in known]
    if missing:
        raise DtkError(f"the archive has no {', '.join(missing)} package",
                       hint="dtk needs busybox-static and kmod from the configured sources")
    return package_closure(known, roots)


def find_binary(root: Path, name: str) -> Path | None:
    return next((root / d / name for d in BIN_DIRS if (root / d / name).is_file()), None)


def elf_closure(root: Path, executable: Path) -> dict[str, Path]:
    """Path in `root` → host file for the interpreter and every library `executable`
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
    for directory in LIB_DIRS:
        candidate = root / directory / soname
        if candidate.exists() or candidate.is_symlink():
            return f"/{directory}/{soname}", _inside(root, f"/{directory}/{soname}")
    raise DtkError(f"library {soname} is in none of the unpacked packages",
                   hint="the archive's dependencies of the program changed; report this to dtk")


def _inside(root: Path, guest_path: str) -> Path:
    """`guest_path` within the unpacked packages, its links resolved as the guest
    would resolve them (through dtk.rootfs: never out of `root`)."""
    host = rootfs.resolve(root, guest_path)
    if host is None or not host.is_file():
        raise DtkError(f"{guest_path} is not a file in the unpacked packages")
    return host
