"""Distribution backends behind one interface.

A backend knows its kernel catalog, which packages make up a kernel's toolkit,
and how to install them. Only Debian (apt) exists today; an RPM family backend
(dnf) implements the same `Distro` protocol.

Owns: the catalog types and protocols (here), APT sources and a private index
(`aptsources`, `aptindex`), the Debian backend (`debian`, `aptrecipe`,
`debver`), fetching and unpacking packages (`debfile`), choosing the archive
(`select`) and the kernel query language (`query`).

May import: dtk.kernel and dtk's base.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dtk import kernel as kern
from dtk.errors import DtkError


@dataclass(frozen=True)
class KernelEntry:
    """One kernel release the archive can install."""

    release: str
    flavour: str
    line: str
    image_package: str
    version: str
    source: str
    source_version: str
    metapackages: tuple[str, ...] = ()
    has_headers: bool = True

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["metapackages"] = list(self.metapackages)
        return data


@dataclass(frozen=True)
class PinnedPackage:
    """A package at an exact version, and why if it is not the kernel's own."""

    name: str
    version: str
    exact: bool = True
    note: str = ""

    @property
    def spec(self) -> str:
        return f"{self.name}={self.version}"


@dataclass(frozen=True)
class KernelPackages:
    """Everything a toolkit installs for one kernel release."""

    release: str
    version: str
    packages: tuple[PinnedPackage, ...]
    compiler_package: str
    notes: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class OsInfo:
    id: str  # os-release ID: "debian"
    version_id: str  # "12"
    codename: str  # "bookworm"
    arch: str  # package architecture: "amd64"


class Recipe(Protocol):
    """Shell fragments a toolkit's Containerfiles use to manage packages."""

    def base_command(self, os: OsInfo, sources: Path, out: Path) -> list[str]: ...

    def base_note(self, os: OsInfo) -> str: ...

    def install(self, specs: Sequence[str], *, downgrades: bool = False) -> str: ...

    def after_tools(self) -> str: ...

    def installed_version(self) -> str: ...

    def installed_kernel_packages(self) -> str: ...

    def package_list(self) -> str: ...

    def arch(self) -> str: ...


class Distro(Protocol):
    """What the toolkit builder needs from a distribution backend."""

    os: OsInfo

    @property
    def recipe(self) -> Recipe: ...

    def kernels(self) -> list[KernelEntry]: ...

    def kernel_packages(self, release: str) -> KernelPackages: ...

    def tool_packages(self) -> tuple[str, ...]: ...

    def base_packages(self) -> tuple[str, ...]: ...

    def package_versions(self, names: Sequence[str]) -> tuple[str, ...]: ...

    def installed_bytes(self, packages: Sequence[PinnedPackage]) -> int: ...

    def sources_text(self) -> str: ...


def find_kernel(entries: list[KernelEntry], release: str) -> KernelEntry:
    """The catalog entry for `release`, or an error naming the closest ones."""
    for entry in entries:
        if entry.release == release:
            return entry
    raise unknown_kernel(entries, release)


def catalog_problems(entries: list[KernelEntry]) -> Callable[[str], str | None]:
    """A question to ask of each kernel: what is wrong with it for this catalog (its
    unknown-kernel message and hint), or None when the archive has it."""
    def problem(release: str) -> str | None:
        try:
            find_kernel(entries, release)
        except DtkError as exc:
            return exc.message + (f" ({exc.hint})" if exc.hint else "")
        return None
    return problem


def unknown_kernel(entries: list[KernelEntry], release: str) -> DtkError:
    names = [e.release for e in entries]
    close = difflib.get_close_matches(release, names, n=4, cutoff=0.5)
    parsed = kern.try_parse(release)
    flavour = parsed.flavour.value if parsed else kern.Flavour.STANDARD.value
    same = [e for e in entries if e.flavour == flavour]
    newest = max(same, key=lambda e: kern.parse(e.release).sort_key, default=None)
    if newest and newest.release not in close:
        close.append(newest.release)
    hint = ("closest available: " + ", ".join(close)) if close else "see 'dtk kernels'"
    what = f"kernel {release} is not in the configured archive"
    if release == os.uname().release:
        what += " (it is this machine's own kernel, which no configured source ships)"
    return DtkError(what, hint=hint + "; list them all with 'dtk kernels'")
