"""Debian's kernel catalog and toolkit package sets, computed from Packages stanzas.

The planning functions here are pure (stanzas in, dataclasses out) so they are
unit-tested on recorded archive metadata; `DebianArchive` adds the live index.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import cached_property

from dtk import kernel as kern
from dtk.digest import parts_digest
from dtk.distro import KernelEntry, KernelPackages, OsInfo, PinnedPackage, find_kernel
from dtk.distro.aptindex import AptIndex, Stanza
from dtk.distro.aptrecipe import AptRecipe
from dtk.distro.debver import Relation, parse_depends, sort_key
from dtk.errors import DtkError

Pool = dict[str, list[Stanza]]

# What the Driver Toolkit ships besides the kernel, in Debian's package names.
# gcc is not here: the exact compiler comes from the kernel's own dependencies.
TOOLS = (
    "make", "binutils", "libelf-dev", "kmod", "dwarves", "bc", "flex", "bison", "openssl",
    "libssl-dev", "keyutils", "mokutil", "xz-utils", "diffutils", "git", "autoconf",
    "automake", "libtool", "abigail-tools", "patch", "dkms", "cpio", "zstd", "file",
    "ca-certificates", "initramfs-tools", "rsync",
)

_IMAGE = re.compile(r"^linux-image-(?P<rel>.+?)(?P<unsigned>-unsigned)?$")
_META = re.compile(r"^linux-image-(?!\d+\.\d+\.\d+)[a-z0-9.-]+$")
_SOURCE = re.compile(r"^(?P<name>\S+)(?:\s+\((?P<version>[^)]+)\))?$")


# What a minimal root (mmdebstrap --variant=minbase) is made of and what its
# security updates land in: the toolkit's base layer is keyed by their versions,
# so that an update of any of them rebuilds it.
BASE_PACKAGES = (
    "base-files", "libc6", "libc-bin", "dpkg", "apt", "libapt-pkg6.0", "bash", "coreutils",
    "tar", "gzip", "perl-base", "gpgv", "debian-archive-keyring", "libssl3", "zlib1g",
    "libgnutls30", "libsystemd0", "libudev1", "util-linux", "login",
)
_COMPILER = re.compile(r"^gcc-\d+$")
# Names `wanted`'s memo (AptIndex.remembered_stanzas): what it selects, spelled out.
_WANTED_MEMO = "debian-wanted-" + parts_digest(
    "linux-image- linux-headers- linux-kbuild- linux-compiler- linux-libc-dev gcc-N",
    *TOOLS, *BASE_PACKAGES)[7:19]


def wanted(name: str) -> bool:
    """Package names toolkit planning needs from an index: the kernel's, and those
    whose versions key the base and tools layers."""
    return name.startswith(("linux-image-", "linux-headers-", "linux-kbuild-",
                            "linux-compiler-")) or name == "linux-libc-dev" \
        or name in TOOLS or name in BASE_PACKAGES or bool(_COMPILER.match(name))


def make_pool(stanzas: Iterable[Stanza]) -> Pool:
    """Index stanzas by name, newest version first, dropping duplicates."""
    pool: defaultdict[str, dict[str, Stanza]] = defaultdict(dict)
    for stanza in stanzas:
        pool[stanza["Package"]].setdefault(stanza["Version"], stanza)
    return {name: sorted(by_version.values(), key=lambda s: sort_key(s["Version"]), reverse=True)
            for name, by_version in pool.items()}


def _source_of(stanza: Stanza) -> tuple[str, str]:
    m = _SOURCE.match(stanza.get("Source", stanza["Package"]))
    assert m is not None
    return m["name"], m["version"] or stanza["Version"]


def catalog(pool: Pool) -> list[KernelEntry]:
    """Every installable kernel release, newest first, with its metapackages."""
    pointers = _metapackage_targets(pool)
    entries = []
    for name, stanzas in pool.items():
        m = _IMAGE.match(name)
        if not m or name.endswith("-dbg"):
            continue
        release = m["rel"]
        parsed = kern.try_parse(release)
        if parsed is None or (m["unsigned"] and f"linux-image-{release}" in pool):
            continue
        image = stanzas[0]
        headers = pool.get(f"linux-headers-{release}")
        source, source_version = _source_of(headers[0] if headers else image)
        entries.append(KernelEntry(
            release=release, flavour=parsed.flavour.value, line=parsed.line,
            image_package=name, version=image["Version"], source=source,
            source_version=source_version,
            metapackages=tuple(sorted(pointers.get(release, ()))),
            has_headers=headers is not None,
        ))
    return sorted(entries, key=lambda e: kern.parse(e.release).sort_key, reverse=True)


def _metapackage_targets(pool: Pool) -> dict[str, list[str]]:
    """release -> metapackages whose newest version depends on it."""
    targets: defaultdict[str, list[str]] = defaultdict(list)
    for name, stanzas in pool.items():
        if not _META.match(name) or name.endswith(("-dbg", "-signed-template")):
            continue
        for group in parse_depends(stanzas[0].get("Depends", "")):
            for rel in group:
                m = _IMAGE.match(rel.name)
                if m and kern.try_parse(m["rel"]):
                    targets[m["rel"]].append(name)
    return targets


def _pick(pool: Pool, name: str, version: str, constraint: str | None = None,
          op: str | None = None) -> PinnedPackage:
    """`name` at `version` if the archive has it, else the newest that satisfies the
    dependency (Debian keeps one kbuild/libc-dev per line, not one per ABI)."""
    stanzas = pool.get(name, [])
    if any(s["Version"] == version for s in stanzas):
        return PinnedPackage(name, version)
    for stanza in stanzas:
        candidate = stanza["Version"]
        if constraint is None or _satisfies(candidate, op, constraint):
            return PinnedPackage(name, candidate, exact=False,
                                 note=f"{name} {version} is not in the archive; "
                                      f"using {candidate}")
    raise DtkError(f"package {name} (needed at {version}) is not in the archive",
                   hint="the archive is incomplete for this kernel; try a newer kernel")


def _satisfies(version: str, op: str | None, constraint: str) -> bool:
    return Relation("x", op, constraint).satisfied_by(version)


def kernel_packages(pool: Pool, release: str,
                    entries: list[KernelEntry] | None = None) -> KernelPackages:
    """The exact packages for one kernel: image, headers (+ their -common and kbuild),
    userspace headers, and the name of the compiler package that built it."""
    entry = find_kernel(catalog(pool) if entries is None else entries, release)
    if not entry.has_headers:
        raise DtkError(f"kernel {release} has no headers package in the archive",
                       hint="out-of-tree modules cannot be built for it; pick another kernel")
    version = entry.version
    headers = next(s for s in pool[f"linux-headers-{release}"] if s["Version"] == version)
    pinned = [PinnedPackage(entry.image_package, version),
              PinnedPackage(f"linux-headers-{release}", version)]
    compiler = "gcc"
    for group in parse_depends(headers.get("Depends", "")):
        rel = group[0]
        if rel.name.startswith(("linux-headers-", "linux-kbuild-", "linux-compiler-")):
            pinned.append(_pick(pool, rel.name, version, rel.version, rel.op))
        if rel.name.startswith("linux-compiler-gcc-"):
            compiler = "gcc-" + rel.name.split("-")[3]
        elif re.fullmatch(r"gcc-\d+", rel.name):
            compiler = rel.name
    libc = _pick(pool, "linux-libc-dev", entry.source_version
                 if entry.source == "linux" else version)
    if entry.source != "linux" and not libc.exact:
        libc = PinnedPackage(libc.name, libc.version, exact=False,
                             note=f"source {entry.source} builds no linux-libc-dev; "
                                  f"using the distribution's {libc.version}")
    pinned.append(libc)
    notes = tuple(p.note for p in pinned if p.note)
    return KernelPackages(release, version, tuple(pinned), compiler, notes)


class DebianCatalog:
    """The Debian backend over a package pool (recorded metadata works too)."""

    def __init__(self, pool: Pool, os: OsInfo, sources: str) -> None:
        self._pool = pool
        self.os = os
        self._sources = sources
        self.recipe = AptRecipe()

    @property
    def pool(self) -> Pool:
        return self._pool

    @cached_property
    def _catalog(self) -> list[KernelEntry]:
        # Planning asks for it several times (kernel, RT sibling, validation).
        return catalog(self.pool)

    def kernels(self) -> list[KernelEntry]:
        return list(self._catalog)

    def kernel_packages(self, release: str) -> KernelPackages:
        return kernel_packages(self.pool, release, self._catalog)

    def tool_packages(self) -> tuple[str, ...]:
        return TOOLS

    def base_packages(self) -> tuple[str, ...]:
        return BASE_PACKAGES

    def installed_bytes(self, packages: Sequence[PinnedPackage]) -> int:
        """What the packages take once installed (the index's Installed-Size), 0 if unknown."""
        total = 0
        for pkg in packages:
            stanza = next((s for s in self.pool.get(pkg.name, ()) if s["Version"] == pkg.version),
                          None)
            total += int(stanza.get("Installed-Size", "0") or 0) * 1024 if stanza else 0
        return total

    def package_versions(self, names: Sequence[str]) -> tuple[str, ...]:
        """'name=version' of the newest of each; '' for a name the archive lacks."""
        return tuple(f"{n}={self.pool[n][0]['Version']}" if n in self.pool else f"{n}="
                     for n in names)

    def sources_text(self) -> str:
        return self._sources


class DebianArchive(DebianCatalog):
    """The live backend: the pool is read from an AptIndex on first use."""

    def __init__(self, index: AptIndex, os: OsInfo) -> None:
        super().__init__({}, os, index.sources_text)
        self.index = index

    @cached_property
    def pool(self) -> Pool:
        self.index.update()
        return make_pool(s for s in self.index.remembered_stanzas(wanted, _WANTED_MEMO)
                         if s.get("Architecture") in (self.os.arch, "all"))


def newest(entries: list[KernelEntry]) -> KernelEntry:
    return max(entries, key=lambda e: kern.parse(e.release).sort_key)


