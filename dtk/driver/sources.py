"""Module sources a driver image is built from: KMM-style Containerfiles and DKMS trees.

Resolving is I/O (reading trees, fetching `*-dkms` packages from the archive);
the results are frozen dataclasses with a content digest, the inputs of a plan.
A source that cannot be resolved becomes a `BrokenSource`, so that its cells
fail with the reason while every other module still builds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Protocol

from dtk import paths
from dtk.digest import file_digest, inputs_digest, tree_digest
from dtk.distro import aptindex, debfile
from dtk.distro.debver import parse_depends
from dtk.driver import dkmsconf
from dtk.driver.naming import module_slug
from dtk.errors import DtkError
from dtk.lock import locked

_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
# As long as dtk's package index counts as fresh (dtk.distro.aptindex).
_FRESH_S = 15 * 60


@dataclass(frozen=True)
class ContainerfileSource:
    """A KMM-style Containerfile and its build context."""

    name: str
    containerfile: Path
    context: Path
    digest: str

    @property
    def text(self) -> str:
        return self.containerfile.read_text(errors="replace")


@dataclass(frozen=True)
class DkmsPackage:
    """One DKMS source tree (the directory holding dkms.conf)."""

    name: str
    version: str
    tree: Path
    digest: str
    build_depends: tuple[str, ...]
    origin: str  # the path, or "debian package NAME"
    # What the *-dkms package Depends on besides dkms (e.g. libxtables-dev): apt
    # installs it on a host before dkms runs, so builds need it in the toolkit too.
    depends: tuple[str, ...] = ()


@dataclass(frozen=True)
class DkmsGroup:
    """DKMS packages built together in one image, dependencies first (BUILD_DEPENDS)."""

    name: str
    packages: tuple[DkmsPackage, ...]
    notes: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        return inputs_digest({p.name: [p.version, p.digest] for p in self.packages})


@dataclass(frozen=True)
class BrokenSource:
    """A source that could not be read; each of its cells fails with `error`."""

    name: str
    error: str


Source = ContainerfileSource | DkmsGroup | BrokenSource


class PackageFetcher(Protocol):
    """What resolving a `*-dkms` package name needs from the archive (AptIndex.download)."""

    def download(self, packages: list[str], dest: Path) -> list[Path]: ...

    def index_files(self) -> list[Path]: ...


def containerfile_source(containerfile: Path, context: Path | None,
                         name: str | None) -> ContainerfileSource:
    if containerfile.is_dir():
        raise DtkError(f"-f {containerfile} is a directory",
                       hint=f"pass the Containerfile itself, e.g. -f {containerfile}/Containerfile")
    if not containerfile.is_file():
        raise DtkError(f"Containerfile {containerfile} does not exist",
                       hint="pass -f PATH to a KMM-style Containerfile")
    context = (context or containerfile.parent).resolve()
    if not context.is_dir():
        raise DtkError(f"build context {context} is not a directory")
    digest = inputs_digest({"containerfile": file_digest(containerfile),
                            "context": tree_digest(context)})
    return ContainerfileSource(module_slug(name or context.name), containerfile.resolve(),
                               context, digest)


# dkms keeps a package under /var/lib/dkms/NAME/VERSION and /usr/src/NAME-VERSION, and
# dtk mounts it there: a name or version with '/', '..', ':' or white space would
# reach other paths or split a volume spec. Real packages use far fewer characters.
_DKMS_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")

# Evaluates each tree's dkms.conf for a kernel (inside a toolkit: see dkms.evaluate_confs).
DkmsEvaluator = Callable[[list["DkmsTree"], str], list[dkmsconf.DkmsConf]]


@dataclass(frozen=True)
class DkmsTree:
    """A directory holding a dkms.conf, before its dkms.conf is evaluated."""

    tree: Path
    origin: str  # the path, or "debian package NAME"
    depends: tuple[str, ...] = ()

    @cached_property
    def digest(self) -> str:
        """The tree's content digest, hashed once: the dkms.conf memo and the
        package's cache key both need it."""
        return tree_digest(self.tree)


def find_dkms_tree(tree: Path, origin: str, depends: tuple[str, ...] = ()) -> DkmsTree:
    if not (tree / "dkms.conf").is_file():
        raise DtkError(f"{tree} has no dkms.conf (dkms: 'Could not locate dkms.conf file')",
                       hint="point --dkms at the directory that holds dkms.conf")
    return DkmsTree(tree, origin, depends)


def package_from_conf(found: DkmsTree, conf: dkmsconf.DkmsConf) -> DkmsPackage:
    """Name, version and BUILD_DEPENDS, the kernel-independent fields of dkms.conf.

    Everything that depends on the kernel is evaluated again inside each kernel's
    toolkit, where a broken dkms.conf fails its cells with dkms's own message.
    """
    name = conf.package_name or found.tree.name
    version = conf.package_version or "0"
    for what, value in (("PACKAGE_NAME", name), ("PACKAGE_VERSION", version)):
        if not _DKMS_WORD.match(value):
            raise DtkError(f"{found.origin}: dkms.conf sets {what}={value!r}, which dkms would "
                           "use in a path", hint="names and versions are letters, digits and "
                                                 "'._+~-', starting with a letter or digit")
    return DkmsPackage(name=name, version=version, tree=found.tree.resolve(),
                       digest=found.digest, build_depends=conf.build_depends,
                       origin=found.origin, depends=found.depends)


def package_depends(control_depends: str) -> tuple[str, ...]:
    """Names a package needs installed (first alternatives), without dkms itself."""
    names = (group[0].name.split(":")[0] for group in parse_depends(control_depends))
    return tuple(dict.fromkeys(n for n in names if n != "dkms"))


def fetch_dkms_package(name: str, fetcher: PackageFetcher) -> tuple[list[Path], tuple[str, ...]]:
    """Download a Debian `*-dkms` package and unpack it: its DKMS trees and its Depends."""
    base = paths.cache_dir() / "dkms"
    with locked(base / "lock", "dkms package cache"):
        deb = _recent_download(base, name, fetcher) or _download(base, name, fetcher)
        root = base / "src" / deb.stem
        if not (root / ".complete").exists():
            root.mkdir(parents=True, exist_ok=True)
            debfile.unpack(deb, root)
            (root / ".complete").write_text(deb.name)
        depends = debfile.control_field(deb, "Depends")
    trees = sorted(c.parent for c in (root / "usr/src").glob("*/dkms.conf"))
    if not trees:
        raise DtkError(f"package {name} ships no /usr/src/*/dkms.conf",
                       hint="is it a *-dkms package?")
    return trees, package_depends(depends)


def _recent_download(base: Path, name: str, fetcher: PackageFetcher) -> Path | None:
    """The .deb fetched for `name` within the package index's freshness window, or
    since the index last changed (then apt would fetch the same one): asking apt
    again costs over a second per package on every run (30 s for Debian's corpus)."""
    memo = base / "resolved" / name
    if not memo.exists():
        return None
    resolved = memo.stat().st_mtime
    index_changed = max((p.stat().st_mtime for p in fetcher.index_files()), default=resolved)
    if time.time() - resolved > _FRESH_S and index_changed >= resolved \
            and not aptindex.offline():  # offline, the .deb there is is the one to use
        return None
    deb = base / "debs" / memo.read_text().strip()
    return deb if deb.is_file() else None


def _download(base: Path, name: str, fetcher: PackageFetcher) -> Path:
    try:
        fetched = fetcher.download([name], base / "debs")
    except DtkError as exc:
        raise DtkError(f"cannot fetch the package {name} from the archive",
                       hint=exc.message.strip().splitlines()[-1]) from None
    deb = max((d for d in fetched if d.name.startswith(name + "_")),
              key=lambda d: d.stat().st_mtime, default=None)
    if deb is None:
        raise DtkError(f"the archive gave no .deb for {name}")
    (base / "resolved").mkdir(parents=True, exist_ok=True)
    (base / "resolved" / name).write_text(deb.name + "\n")
    return deb


def resolve_dkms(specs: Sequence[str], fetcher: PackageFetcher | None, kernelver: str,
                 evaluate: DkmsEvaluator) -> list[Source]:
    """Each SRC (a tree or a package name) as DKMS packages, grouped by BUILD_DEPENDS."""
    found: list[tuple[str, DkmsTree]] = []
    broken: list[Source] = []
    for spec in specs:
        try:
            found += [(spec, tree) for tree in _find_trees(spec, fetcher)]
        except DtkError as exc:
            broken.append(BrokenSource(module_slug(Path(spec).name or spec), _text(exc)))
    try:
        confs = evaluate([tree for _spec, tree in found], kernelver)
    except DtkError as exc:
        return [*(BrokenSource(module_slug(Path(s).name or s), _text(exc))
                  for s in dict.fromkeys(spec for spec, _ in found)), *broken]
    packages: list[DkmsPackage] = []
    for (spec, tree), conf in zip(found, confs, strict=True):
        try:
            packages.append(package_from_conf(tree, conf))
        except DtkError as exc:
            broken.append(BrokenSource(module_slug(Path(spec).name or spec), _text(exc)))
    return [*group_by_depends(packages), *broken]


def _find_trees(spec: str, fetcher: PackageFetcher | None) -> list[DkmsTree]:
    path = Path(spec)
    if path.exists():
        return [find_dkms_tree(path, str(path))]
    if _PACKAGE_NAME.match(spec) and fetcher is not None:
        trees, depends = fetch_dkms_package(spec, fetcher)
        return [find_dkms_tree(tree, f"debian package {spec}", depends) for tree in trees]
    raise DtkError(f"'{spec}' is neither a directory nor a package name")


def _text(exc: DtkError) -> str:
    return exc.message + (f"\nhint: {exc.hint}" if exc.hint else "")


def group_by_depends(packages: Sequence[DkmsPackage]) -> list[Source]:
    """Connected components of BUILD_DEPENDS among the given packages, each in build order.

    A dependency that is not among them is only noted: dkms itself uses
    BUILD_DEPENDS to order the packages it builds together, nothing more.
    """
    by_name = {p.name: p for p in packages}
    parent = {name: name for name in by_name}

    def root(name: str) -> str:
        while parent[name] != name:
            name = parent[name]
        return name

    notes: dict[str, list[str]] = {}
    for pkg in packages:
        for dep in pkg.build_depends:
            if dep in by_name:
                parent[root(pkg.name)] = root(dep)
            else:
                notes.setdefault(pkg.name, []).append(
                    f"{pkg.name}: BUILD_DEPENDS names {dep}, which is not built with it")
    components: dict[str, list[DkmsPackage]] = {}
    for pkg in packages:
        components.setdefault(root(pkg.name), []).append(pkg)
    groups: list[Source] = []
    for members in components.values():
        ordered = _build_order(members)
        if isinstance(ordered, str):
            groups.append(BrokenSource(module_slug(members[-1].name), ordered))
            continue
        group_notes = tuple(n for p in ordered for n in notes.get(p.name, ()))
        groups.append(DkmsGroup(module_slug(ordered[-1].name), tuple(ordered), group_notes))
    return groups


def _build_order(members: list[DkmsPackage]) -> list[DkmsPackage] | str:
    """Dependencies before dependents, or an error message naming a cycle."""
    names = {p.name for p in members}
    done: list[DkmsPackage] = []
    pending = list(members)
    while pending:
        built = {p.name for p in done}
        ready = [p for p in pending
                 if all(d not in names or d in built for d in p.build_depends)]
        if not ready:
            return "BUILD_DEPENDS cycle among " + ", ".join(sorted(p.name for p in pending))
        done.extend(ready)
        pending = [p for p in pending if p not in ready]
    return done
