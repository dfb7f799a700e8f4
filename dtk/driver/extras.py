"""Toolkit plus what a `*-dkms` package Depends on, for the packages that need more.

On a host, `apt install foo-dkms` installs foo-dkms's dependencies (say
libxtables-dev, pkg-config or another DKMS source) before dkms builds it, and
the build relies on them. A toolkit has compilers and kernel headers, not
those, so such packages get a toolkit layer with them installed: built once
per key, reused by every cell and later run.

The key is content-derived: the toolkit's image id, the packages asked for, and
the archive's versions of them and of everything they depend on. Each machine
builds the layer itself (apt is not byte-reproducible, so image ids differ), but
from the same inputs it gets the same key, and a cell's input hash covers that
key rather than the layer's image id: cells built on it are shared through the
registry cache like any other, and a new version of a dependency in the archive
makes a new key.

The layer is made only when a cell that needs it compiles (`Maker`), not while
planning: a machine whose cells all come from the shared cache (or that has only
remembered failures to repeat) never spends the minute apt takes.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dtk import paths
from dtk import run as runner
from dtk.digest import inputs_digest
from dtk.distro.aptindex import AptIndex
from dtk.distro.userland import resolve_closure
from dtk.driver.outcome import CellFailedError, tail_of
from dtk.driver.plan import KIND_LABEL, Cell, ImageRef
from dtk.driver.sources import DkmsGroup, Source
from dtk.engine import buildah, made
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.lock import locked
from dtk.progress import Monitor

EXTRAS_REPO = "localhost/dtk-toolkit-extras"
KEY_LABEL = "dtk.build.extras-key"


def installed_packages(toolkit: ImageRef) -> frozenset[str]:
    """The toolkit's packages, remembered per image id (an image never changes)."""
    memo = paths.cache_dir() / "extras" / f"installed-{toolkit.image_id}"
    if memo.is_file():
        return frozenset(memo.read_text().split())
    # Through a file: a container's output reaches us only as a tail.
    with tempfile.TemporaryDirectory(prefix="dtk-pkgs-") as tmp, \
            buildah.working_container(toolkit.name) as ctr:
        ctr.run(["sh", "-c", "dpkg-query -W -f '${Package}\\n' > /dtk-pkgs/list"],
                volumes=[f"{tmp}:/dtk-pkgs"], timeout=120,
                what=f"listing the packages of {toolkit.name} failed")
        listed = (Path(tmp) / "list").read_text()
    write_atomic(memo, listed.encode())  # another dtk may read it at once
    return frozenset(listed.split())


def missing(group: DkmsGroup, installed: frozenset[str]) -> tuple[str, ...]:
    """The group's dependencies the toolkit lacks, in a stable order."""
    names = {p.name for p in group.packages}
    wanted = {d for pkg in group.packages for d in pkg.depends}
    # A dependency on another source built in the same group is met by building it.
    return tuple(sorted(d for d in wanted - installed
                        if d.removesuffix("-dkms") not in names))


def containerfile(toolkit: ImageRef, packages: Sequence[str]) -> str:
    return (f"FROM {toolkit.name}\n"
            "RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
            f"--no-install-recommends {' '.join(packages)} && rm -rf /var/lib/apt/lists/*\n")


def extras_key(toolkit: ImageRef, packages: tuple[str, ...],
               versions: tuple[str, ...]) -> str:
    """Every input of an extras layer: `versions` are "name=version" of the packages
    and their dependency closure, as the archive offers them (what apt installs)."""
    return inputs_digest({"toolkit": toolkit.image_id, "packages": list(packages),
                          "versions": list(versions)})


def closure_versions(index: AptIndex, arch: str, packages: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{s['Package']}={s['Version']}"
                 for s in resolve_closure(index, arch, packages))


def extras_tag(key: str) -> str:
    return f"{EXTRAS_REPO}:{key.removeprefix('sha256:')[:16]}"


def ensure_extras(toolkit: ImageRef, packages: tuple[str, ...], key: str,
                  log: Path) -> ImageRef:
    tag = extras_tag(key)
    with locked(paths.cache_dir() / "locks" / "toolkit-extras", "toolkit-extras"):
        if not buildah.image_exists(tag):
            with tempfile.TemporaryDirectory(prefix="dtk-extras-") as tmp:
                file = Path(tmp) / "Containerfile"
                file.write_text(containerfile(toolkit, packages))
                image_id = buildah.bud(buildah.BuildSpec(file, Path(tmp), tag, labels={
                    KIND_LABEL: "toolkit-extras", "dtk.build.extra-packages": " ".join(packages),
                    "dtk.build.toolkit-digest": toolkit.image_id, KEY_LABEL: key}),
                    log_file=log)
                made.record(image_id, tag, "toolkit-extras")
    return ImageRef(tag, buildah.image_id(tag), content_key=key)


def planned_extras(key: str) -> ImageRef:
    """The layer a key names, whether or not it exists here (its id, if it does)."""
    tag = extras_tag(key)
    return ImageRef(tag, buildah.image_id(tag) if buildah.image_exists(tag) else "",
                    content_key=key)


@dataclass(frozen=True)
class _Recipe:
    toolkit: ImageRef
    packages: tuple[str, ...]
    key: str
    log: Path


class Maker:
    """Makes a cell's extras layer before it compiles (`prepare`), once per layer; the
    cell comes back with the layer's image id. A layer that fails to build fails every
    cell on it with apt's words, without trying again in this run."""

    def __init__(self) -> None:
        self._recipes: dict[str, _Recipe] = {}
        self._made: dict[str, ImageRef | DtkError] = {}
        self._lock = threading.Lock()

    def add(self, recipe: _Recipe) -> ImageRef:
        tag = extras_tag(recipe.key)
        self._recipes[tag] = recipe
        return planned_extras(recipe.key)

    def prepare(self, cell: Cell) -> Cell:
        recipe = self._recipes.get(cell.toolkit.name) if cell.toolkit else None
        if recipe is None:
            return cell
        with self._lock:
            tag = extras_tag(recipe.key)
            if tag not in self._made:
                try:
                    self._made[tag] = ensure_extras(recipe.toolkit, recipe.packages,
                                                    recipe.key, recipe.log)
                except DtkError as exc:
                    self._made[tag] = exc
            made_ = self._made[tag]
        if isinstance(made_, DtkError):
            said = tail_of(made_.tail, 6) if isinstance(made_, runner.CommandError) \
                else (made_.message,)
            message = (f"installing {', '.join(recipe.packages)} into {recipe.toolkit.name} "
                       f"failed (log: {recipe.log})")
            if isinstance(made_, runner.CommandError) and package_fault(made_.tail):
                # The packages' own verdict: remembered and shared like a compile error.
                raise CellFailedError(message, made_.tail)
            raise DtkError("\n".join((message, *said)))
        return replace(cell, toolkit=made_)


# dpkg and apt saying the packages themselves cannot be installed: a maintainer
# script failed (xtables-addons-dkms's postinst builds its modules for the toolkit's
# kernel, and fails on 6.12), or the archive's dependencies cannot be met. The layer's
# key covers the packages' versions and the toolkit, so the same key fails the same
# way. A download or resolver failure says nothing about the packages.
_PACKAGE_FAULT = re.compile(r"post-installation script (?:subprocess )?returned error exit "
                            r"status|dpkg: error processing package|held broken packages")
_NETWORK_FAULT = re.compile(r"Failed to fetch|Temporary failure resolving|Could not connect|"
                            r"Connection failed|Hash Sum mismatch")


def package_fault(output: str) -> bool:
    """Whether apt's output blames the packages (worth remembering), not the network."""
    return bool(_PACKAGE_FAULT.search(output)) and not _NETWORK_FAULT.search(output)


def resolve_extras(sources: Sequence[Source], toolkits: Mapping[str, ImageRef | str],
                   archive: tuple[AptIndex, str], log_dir: Path, monitor: Monitor, *,
                   maker: Maker) -> dict[tuple[str, str], ImageRef | str]:
    """(group name, kernel) -> the image its cell builds in, or why there is none.
    Nothing is built here: the key needs only the inputs, and `maker` makes a layer
    when a cell on it compiles.

    Only groups whose packages need something the toolkit lacks appear here;
    the others build in the toolkit itself.
    """
    groups = [s for s in sources if isinstance(s, DkmsGroup)
              and any(p.depends for p in s.packages)]
    result: dict[tuple[str, str], ImageRef | str] = {}
    installed: dict[str, frozenset[str]] = {}
    versions: dict[tuple[str, ...], tuple[str, ...]] = {}
    log_dir.mkdir(parents=True, exist_ok=True)
    for group in groups:
        for kernel, toolkit in toolkits.items():
            if isinstance(toolkit, str):
                continue
            if toolkit.image_id not in installed:
                installed[toolkit.image_id] = installed_packages(toolkit)
            needed = missing(group, installed[toolkit.image_id])
            if not needed:
                continue
            monitor.step(f"{group.name}: toolkit {toolkit.name} plus {', '.join(needed)}")
            try:
                if needed not in versions:
                    versions[needed] = closure_versions(*archive, needed)
            except DtkError as exc:  # the archive's answer: a dependency it lacks
                result[(group.name, kernel)] = (
                    f"installing {group.name}'s dependencies ({', '.join(needed)}) into "
                    f"{toolkit.name} failed\n{exc.message}")
                continue
            key = extras_key(toolkit, needed, versions[needed])
            result[(group.name, kernel)] = maker.add(_Recipe(
                toolkit, needed, key, log_dir / f"extras-{group.name}.log"))
    return result
