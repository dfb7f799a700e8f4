"""Toolkit plus what a `*-dkms` package Depends on, for the packages that need more.

On a host, `apt install foo-dkms` installs foo-dkms's dependencies (say
libxtables-dev, pkg-config or another DKMS source) before dkms builds it, and
the build relies on them. A toolkit has compilers and kernel headers, not
those, so such packages get a toolkit layer with them installed: built once
per (toolkit image, package set), reused by every cell and later run, and part
of each cell's input hash through its image id.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from dtk import paths
from dtk import run as runner
from dtk.digest import inputs_digest
from dtk.driver.outcome import tail_of
from dtk.driver.plan import KIND_LABEL, ImageRef
from dtk.driver.sources import DkmsGroup, Source
from dtk.engine import buildah, made
from dtk.errors import DtkError
from dtk.lock import locked
from dtk.progress import Monitor

EXTRAS_REPO = "localhost/dtk-toolkit-extras"


def installed_packages(toolkit: ImageRef) -> frozenset[str]:
    # Through a file: a container's output reaches us only as a tail.
    with tempfile.TemporaryDirectory(prefix="dtk-pkgs-") as tmp, \
            buildah.working_container(toolkit.name) as ctr:
        ctr.run(["sh", "-c", "dpkg-query -W -f '${Package}\\n' > /dtk-pkgs/list"],
                volumes=[f"{tmp}:/dtk-pkgs"], timeout=120,
                what=f"listing the packages of {toolkit.name} failed")
        return frozenset((Path(tmp) / "list").read_text().split())


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


def ensure_extras(toolkit: ImageRef, packages: tuple[str, ...], log: Path) -> ImageRef:
    key = inputs_digest({"toolkit": toolkit.image_id, "packages": list(packages)})
    tag = f"{EXTRAS_REPO}:{key.removeprefix('sha256:')[:16]}"
    with locked(paths.cache_dir() / "locks" / "toolkit-extras", "toolkit-extras"):
        if not buildah.image_exists(tag):
            with tempfile.TemporaryDirectory(prefix="dtk-extras-") as tmp:
                file = Path(tmp) / "Containerfile"
                file.write_text(containerfile(toolkit, packages))
                image_id = buildah.bud(buildah.BuildSpec(file, Path(tmp), tag, labels={
                    KIND_LABEL: "toolkit-extras", "dtk.build.extra-packages": " ".join(packages),
                    "dtk.build.toolkit-digest": toolkit.image_id}), log_file=log)
                made.record(image_id, tag, "toolkit-extras")
    return ImageRef(tag, buildah.image_id(tag))


def resolve_extras(sources: Sequence[Source], toolkits: Mapping[str, ImageRef | str],
                   log_dir: Path, monitor: Monitor) -> dict[tuple[str, str], ImageRef | str]:
    """(group name, kernel) -> the image its cell builds in, or why there is none.

    Only groups whose packages need something the toolkit lacks appear here;
    the others build in the toolkit itself.
    """
    groups = [s for s in sources if isinstance(s, DkmsGroup)
              and any(p.depends for p in s.packages)]
    result: dict[tuple[str, str], ImageRef | str] = {}
    installed: dict[str, frozenset[str]] = {}
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
                result[(group.name, kernel)] = ensure_extras(
                    toolkit, needed, log_dir / f"extras-{group.name}.log")
            except DtkError as exc:
                # What apt or a dependency's own postinst said is the reason to show.
                said = tail_of(exc.tail, 6) if isinstance(exc, runner.CommandError) else ()
                result[(group.name, kernel)] = "\n".join((
                    f"installing {group.name}'s dependencies ({', '.join(needed)}) into "
                    f"{toolkit.name} failed (log: {log_dir / f'extras-{group.name}.log'})",
                    *said))
    return result
