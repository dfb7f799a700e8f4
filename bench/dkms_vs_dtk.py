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
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dtk import kernel as kern
from dtk import run as runner
from dtk.distro.select import open_archive
from dtk.driver.base import ensure_base
from dtk.driver.dkms import evaluate_confs
from dtk.driver.naming import module_slug
from dtk.driver.sources import (
    DkmsPackage,
    fetch_dkms_package,
    find_dkms_tree,
    package_from_conf,
)
from dtk.engine import buildah
from dtk.toolkit.images import ensure_toolkit

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


def dkms_side(packages: list[DkmsPackage], kernels: list[str]) -> tuple[float, dict[str, str]]:
    """Register, build every module for every kernel one at a time, unregister."""
    created = []
    for pkg in packages:
        dest = Path("/usr/src") / f"{pkg.name}-{pkg.version}"
        if dest.exists():
            raise SystemExit(f"{dest} already exists on the host; refusing to touch it")
        shutil.copytree(pkg.tree, dest, symlinks=True)
        created.append(dest)
        runner.run(["dkms", "add", "-m", pkg.name, "-v", pkg.version], timeout=300)
    results: dict[str, str] = {}
    start = time.monotonic()
    try:
        for kernel in kernels:
            for pkg in packages:
                build = runner.run(["dkms", "build", "-m", pkg.name, "-v", pkg.version,
                                    "-k", kernel], check=False, timeout=3600)
                status = {0: "built", 77: "excluded"}.get(build.returncode, "failed")
                results[f"{module_slug(pkg.name)}@{kernel}"] = status  # dtk's cell name
        return time.monotonic() - start, results
    finally:
        for pkg in packages:
            runner.run(["dkms", "remove", "-m", pkg.name, "-v", pkg.version, "--all"],
                       check=False, timeout=300)
        for dest in created:
            shutil.rmtree(dest, ignore_errors=True)


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
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: dkms and apt-get need it")
    kernels = args.kernels.split(",") if args.kernels else default_kernels()
    archive = open_archive()
    toolkits = [ensure_toolkit(k, "auto", distro=archive) for k in kernels]  # not timed
    trees = [find_dkms_tree(tree, name) for name in args.packages.split(",")
             for tree in fetch_dkms_package(name, archive.index)[0]]
    confs = evaluate_confs(toolkits[0].name, [t.tree for t in trees], kernels[0])
    packages = [package_from_conf(t, c) for t, c in zip(trees, confs, strict=True)]
    install_host_packages(kernels)
    ensure_base(archive.index, archive.os.arch)
    dkms_times, dtk_times, dkms_cpu, dtk_cpu = [], [], [], []
    # Rounds alternate the two sides, so that other load on the machine hits both.
    with load(args.load):
        for _ in range(args.rounds):
            NO_SIGNING.parent.mkdir(parents=True, exist_ok=True)
            NO_SIGNING.write_text("sign_file=/dtk-bench-no-signing\n")
            cpu = cpu_of_children()
            try:
                dkms_wall, dkms_results = dkms_side(packages, kernels)
            finally:
                NO_SIGNING.unlink()
            dkms_cpu.append(cpu_of_children() - cpu)
            cpu = cpu_of_children()
            dtk_wall, dtk_results = dtk_side(packages, kernels)
            dtk_cpu.append(cpu_of_children() - cpu)
            dkms_times.append(dkms_wall)
            dtk_times.append(dtk_wall)
    dkms_wall, dtk_wall = min(dkms_times), min(dtk_times)
    print(f"\n{len(packages)} DKMS packages x {len(kernels)} kernels on {os.cpu_count()} cores"
          + (f", {args.load} busy processes beside" if args.load else ", nothing beside"))
    print(f"{'CELL':48} {'DKMS (host)':12} {'DTK':12}")
    for cell in sorted(set(dkms_results) | set(dtk_results)):
        print(f"{cell:48} {dkms_results.get(cell, '-'):12} "
              f"{dtk_results.get(cell, '-'):12}")
    print(f"\nrounds: dkms {', '.join(f'{s:.1f}s' for s in dkms_times)}; "
          f"dtk {', '.join(f'{s:.1f}s' for s in dtk_times)}")
    print(f"CPU seconds (user+sys): dkms {', '.join(f'{s:.1f}' for s in dkms_cpu)}; "
          f"dtk {', '.join(f'{s:.1f}' for s in dtk_cpu)}")
    print(f"best wall time: dkms build {dkms_wall:.1f}s, dtk build {dtk_wall:.1f}s, "
          f"ratio dkms/dtk = {dkms_wall / dtk_wall:.2f} (above 1: dtk is faster)")


if __name__ == "__main__":
    main()
