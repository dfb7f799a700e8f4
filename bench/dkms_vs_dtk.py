"""Benchmark: `dkms build` on the host vs `dtk build --dkms`, same modules x kernels.

What it does to this machine (say so before running it): it installs Debian's
`dkms` and the chosen kernels' `linux-headers-*` packages on the host with
apt-get (they stay installed), registers the DKMS sources with the host's dkms
and removes them again afterwards. Module signing is switched off for the run
on both sides (a file in /etc/dkms/framework.conf.d, removed afterwards),
because dtk signs in a separate step and dkms would otherwise make and use a
throwaway key.

Both sides build the same Debian `*-dkms` source trees for the same kernels.
dkms builds one module for one kernel at a time, as `dkms autoinstall` does;
dtk runs cells in parallel, one per core, inside toolkits that already exist
(toolkit builds are not timed: they are made once per kernel and reused).

    .venv/bin/python bench/dkms_vs_dtk.py [--packages a-dkms,b-dkms] [--kernels K1,K2]
                                          [--rounds 3] [--load N]

`--load N` keeps N busy processes running beside both sides for the whole
measurement (a machine that is doing something else, as a CI runner or a build
host is). Prints a table per cell, each round's wall and CPU times, and the ratio
of the best.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dtk import kernel as kern
from dtk import run as runner
from dtk.distro.select import open_archive
from dtk.driver.base import ensure_base
from dtk.driver.dkms import evaluate_confs
from dtk.driver.matrix import make_jobs, source_bytes
from dtk.driver.naming import module_slug
from dtk.driver.sources import (
    DkmsPackage,
    fetch_dkms_package,
    find_dkms_tree,
    package_from_conf,
)
from dtk.engine import buildah
from dtk.toolkit.images import ensure_toolkit

Side = Callable[[list[DkmsPackage], list[str]], tuple[float, dict[str, str]]]
PACKAGES = ("v4l2loopback-dkms", "acpi-call-dkms", "bbswitch-dkms", "dm-writeboost-dkms",
            "tp-smapi-dkms", "xtrx-dkms")
NO_SIGNING = Path("/etc/dkms/framework.conf.d/zz-dtk-bench.conf")


def default_kernels() -> list[str]:
    newest = next(e.release for e in open_archive().kernels()
                  if e.line == "6.1" and e.flavour == "standard")
    rt = kern.parse(newest).rt_sibling()
    return [newest] + ([rt] if rt else [])


def install_host_packages(kernels: list[str]) -> None:
    print(f"installing on the host: dkms and linux-headers for {', '.join(kernels)}",
          file=sys.stderr)
    runner.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "dkms",
                *(f"linux-headers-{k}" for k in kernels)], timeout=1800,
               env={"DEBIAN_FRONTEND": "noninteractive"})


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def load(processes: int) -> Iterator[None]:
    """`processes` busy loops beside the measurement (not counted in its CPU figures:
    they are not children that have been waited for until the end)."""
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(processes)]
    for hog in hogs:
        hog.start()
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.join()


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def registered(packages: list[DkmsPackage]) -> Iterator[None]:
    """The packages' trees in /usr/src and `dkms add`ed, as their *-dkms packages leave
    them; refused if a tree is already there (the host's own), undone afterwards."""
    created = []
    try:
        for pkg in packages:
            dest = Path("/usr/src") / f"{pkg.name}-{pkg.version}"
            if dest.exists():
                raise SystemExit(f"{dest} already exists on the host; refusing to touch it")
            shutil.copytree(pkg.tree, dest, symlinks=True)
            created.append(dest)
            runner.run(["dkms", "add", "-m", pkg.name, "-v", pkg.version], timeout=300)
        yield
    finally:
        for pkg in packages[:len(created)]:
            runner.run(["dkms", "remove", "-m", pkg.name, "-v", pkg.version, "--all"],
                       check=False, timeout=300)
        for dest in created:
            shutil.rmtree(dest, ignore_errors=True)


@contextlib.contextmanager
def no_signing() -> Iterator[None]:
    """dkms without its throwaway signing key: dtk signs in a separate step."""
    NO_SIGNING.parent.mkdir(parents=True, exist_ok=True)
    NO_SIGNING.write_text("sign_file=/dtk-bench-no-signing\n")
    try:
        yield
    finally:
        NO_SIGNING.unlink()


def dkms_side(packages: list[DkmsPackage], kernels: list[str]) -> tuple[float, dict[str, str]]:
    """Register, build every module for every kernel one at a time, unregister."""
    results: dict[str, str] = {}
    with registered(packages):
        start = time.monotonic()
        for kernel in kernels:
            for pkg in packages:
                build = runner.run(["dkms", "build", "-m", pkg.name, "-v", pkg.version,
                                    "-k", kernel], check=False, timeout=3600)
                status = {0: "built", 77: "excluded"}.get(build.returncode, "failed")
                results[f"{module_slug(pkg.name)}@{kernel}"] = status  # dtk's cell name
        return time.monotonic() - start, results


# One cell of the floor: the make command dkms would run for it (dkms.conf's MAKE[0]
# or dkms's default), in a fresh copy of the tree, nothing else. The bench runs on
# the host anyway (its dkms side sources every dkms.conf there too).
FLOOR_CELL = r"""
set -u
src=$1 kernelver=$2 dkms_tree=$3 jobs=$4
arch=$(uname -m) kernel_source_dir=/lib/modules/$kernelver/build source_tree=${src%/*}
# shellcheck disable=SC1091
. "$src/dkms.conf" >/dev/null
b=$dkms_tree/$PACKAGE_NAME/$PACKAGE_VERSION/build
make_command=${MAKE[0]:-make -C $kernel_source_dir M=$b}
mkdir -p "${b%/build}" && cp -a "$src/" "$b" && cd "$b" || exit 1
export CC=gcc-12  # what dkms takes from Debian's .kernelvariables
eval "${make_command/#make/make -j$jobs KERNELRELEASE=$kernelver}" >make.log 2>&1
"""


def floor_side(packages: list[DkmsPackage], kernels: list[str]) -> tuple[float, dict[str, str]]:
    """The floor: no dkms, no containers, no images, only each cell's make command,
    one cell per core, as dtk schedules them (make -j shared among the cells beside
    each other). No tool that compiles the same cells on these cores can be faster."""
    cores = os.cpu_count() or 1
    cells = [(pkg, kernel) for kernel in kernels for pkg in packages]
    cells.sort(key=lambda c: -source_bytes(c[0].tree))  # as dtk orders them
    remaining = [len(cells)]
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="dtk-bench-floor-") as tmp:
        def one(cell: tuple[DkmsPackage, str]) -> tuple[str, str]:
            pkg, kernel = cell
            with lock:
                jobs = make_jobs(cores, cores, remaining[0])
            tree = Path(tmp) / kernel
            result = runner.run(["bash", "-c", FLOOR_CELL, "floor", str(pkg.tree), kernel,
                                 str(tree), str(jobs)], check=False, timeout=3600)
            with lock:
                remaining[0] -= 1
            return (f"{module_slug(pkg.name)}@{kernel}",
                    "built" if result.returncode == 0 else "failed")
        start = time.monotonic()
        with ThreadPoolExecutor(max_workers=cores) as pool:
            results = dict(pool.map(one, cells))
        return time.monotonic() - start, results


def dtk_side(packages: list[DkmsPackage], kernels: list[str]) -> tuple[float, dict[str, str]]:
    prefix = f"localhost/dtk-bench-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, "-m", "dtk", "build", "--json",
            "--image", prefix + "/${MOD_NAME}:${KERNEL_FULL_VERSION}"]
    for pkg in packages:
        argv += ["--dkms", str(pkg.tree)]
    for kernel in kernels:
        argv += ["--kernel", kernel]
    start = time.monotonic()
    result = runner.run(argv, check=False, timeout=3600)
    wall = time.monotonic() - start
    data: dict[str, Any] = json.loads(result.stdout)
    for row in buildah.images():
        for name in row.get("names") or ():
            if name.startswith(prefix):
                buildah.remove_image(name)
    return wall, {f"{o['module']}@{o['kernel']}": o["status"] for o in data["outcomes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", default=",".join(PACKAGES))
    parser.add_argument("--kernels", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="N busy processes running beside both sides")
    parser.add_argument("--floor", action="store_true",
                        help="a third side: the cells' make commands alone, one per core")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: dkms and apt-get need it")
    kernels = args.kernels.split(",") if args.kernels else default_kernels()
    archive = open_archive()
    toolkits = [ensure_toolkit(k, "auto", distro=archive) for k in kernels]  # not timed
    trees = [find_dkms_tree(tree, name) for name in args.packages.split(",")
             for tree in fetch_dkms_package(name, archive.index)[0]]
    confs = evaluate_confs(toolkits[0].name, trees, kernels[0])
    packages = [package_from_conf(t, c) for t, c in zip(trees, confs, strict=True)]
    install_host_packages(kernels)
    ensure_base(archive.index, archive.os.arch)
    sides: dict[str, Side] = {"dkms": unsigned_dkms_side, "dtk": dtk_side}
    if args.floor:
        sides["floor"] = floor_side
    walls: dict[str, list[float]] = {name: [] for name in sides}
    cpus: dict[str, list[float]] = {name: [] for name in sides}
    results: dict[str, dict[str, str]] = {}
    # Rounds alternate the sides, so that other load on the machine hits each.
    with load(args.load):
        for _ in range(args.rounds):
            for name, side in sides.items():
                cpu = cpu_of_children()
                wall, results[name] = side(packages, kernels)
                walls[name].append(wall)
                cpus[name].append(cpu_of_children() - cpu)
    report(walls, cpus, results, packages=len(packages), kernels=len(kernels),
           load_processes=args.load)


def unsigned_dkms_side(packages: list[DkmsPackage], kernels: list[str]
                       ) -> tuple[float, dict[str, str]]:
    with no_signing():
        return dkms_side(packages, kernels)


def report(walls: dict[str, list[float]], cpus: dict[str, list[float]],
           results: dict[str, dict[str, str]], *, packages: int, kernels: int,
           load_processes: int) -> None:
    print(f"\n{packages} DKMS packages x {kernels} kernels on {os.cpu_count()} cores"
          + (f", {load_processes} busy processes beside" if load_processes
             else ", nothing beside"))
    names = list(walls)
    print(f"{'CELL':48} " + " ".join(f"{n.upper():10}" for n in names))
    for cell in sorted(set().union(*results.values())):
        print(f"{cell:48} " + " ".join(f"{results[n].get(cell, '-'):10}" for n in names))
    for name in names:
        print(f"{name}: wall {', '.join(f'{s:.1f}s' for s in walls[name])}; "
              f"CPU (user+sys) {', '.join(f'{s:.1f}s' for s in cpus[name])}")
    best = {name: min(times) for name, times in walls.items()}
    print(f"best wall time: dkms build {best['dkms']:.1f}s, dtk build {best['dtk']:.1f}s, "
          f"ratio dkms/dtk = {best['dkms'] / best['dtk']:.2f} (above 1: dtk is faster)")
    if "floor" in best:
        print(f"floor (the make commands alone, one cell per core): {best['floor']:.1f}s; "
              f"the best any tool could do: dkms/floor = {best['dkms'] / best['floor']:.2f}")


if __name__ == "__main__":
    main()
