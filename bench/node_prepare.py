"""Benchmark: from "kernel K's package is installed" to "its drivers are ready",
`dtk node prepare --kernel K` against `dkms autoinstall -k K`, on the same host.

    .venv/bin/python bench/node_prepare.py [--packages a-dkms,b-dkms] [--count 3]
                                           [--kernel K] [--rounds 1]

The packages are the three (--count) largest `*-dkms` packages in the machine's
APT sources, by their Installed-Size (what they install is their /usr/src
source tree), that build for K: one that does not (dtk build fails or
excludes it) has no image to prepare, so it is reported and the next largest
taken. The kernel defaults to the newest 6.1 one.

What it does to this machine (it says so before): like bench/dkms_vs_dtk.py it
installs `dkms` and K's `linux-headers` with apt-get (they stay installed),
puts the packages' trees in /usr/src and `dkms add`s them (refused if a tree is
already there), and removes them, their builds and /lib/modules/K/updates
afterwards. Module signing is off for dkms (dtk signs in a separate step).

Not timed, on either side, is what comes before the kernel: for dkms the
registered sources (what installing a `*-dkms` package leaves); for dtk the
driver images, built by `dtk build` and handed to the host as OCI archives,
and the declarations (`dtk node add oci-archive:… --module NAME`) in a node
root (--root) where K's `linux-image` package is unpacked and `depmod`ed as
its postinst does. Timed is what the kernel's postinst hook runs:
`dkms autoinstall -k K` (build + install into /lib/modules/K/updates, one
package after another, as the hook does), and `dtk node prepare --kernel K`
(fetch from the archive, unpack, check against K's own files). The host
kernel has no module support, so "ready" means installed for dkms and
prepared + checked for dtk: neither side loads anything.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

# bench/dkms_vs_dtk.py, beside this script: the same host set-up and clean-up
from dkms_vs_dtk import default_kernels, install_host_packages, no_signing, registered

from dtk import run as runner
from dtk.distro.debfile import unpack as unpack_deb
from dtk.distro.select import open_archive
from dtk.driver.base import ensure_base
from dtk.driver.dkms import evaluate_confs
from dtk.driver.matrix import source_bytes
from dtk.driver.naming import module_slug
from dtk.driver.sources import DkmsPackage, fetch_dkms_package, find_dkms_tree, package_from_conf
from dtk.engine import buildah
from dtk.toolkit.images import ensure_toolkit

PREFIX = "localhost/dtk-bench-node"


def largest_dkms() -> list[str]:
    """The archive's *-dkms packages, largest first, by Installed-Size."""
    index = open_archive().index
    sizes: dict[str, int] = {}
    for stanza in index.stanzas(lambda n: n.endswith("-dkms") and n != "dh-dkms"):
        size = int(stanza.get("Installed-Size", "0") or 0)
        sizes[stanza["Package"]] = max(size, sizes.get(stanza["Package"], 0))
    return sorted(sizes, key=lambda n: -sizes[n])


def load_packages(names: list[str], toolkit: str, kernel: str) -> list[DkmsPackage]:
    index = open_archive().index
    trees = [find_dkms_tree(tree, name) for name in names
             for tree in fetch_dkms_package(name, index)[0]]
    confs = evaluate_confs(toolkit, trees, kernel)
    return [package_from_conf(t, c) for t, c in zip(trees, confs, strict=True)]


Built = dict[str, tuple[Path, str]]  # declaration name -> (OCI archive, a module in it)


def build_images(packages: list[DkmsPackage], kernel: str, out: Path
                 ) -> tuple[Built, dict[str, str]]:
    """The driver images `dtk build` made for `kernel`, saved as OCI archives, and the
    packages it could not build (name -> why)."""
    argv = [sys.executable, "-m", "dtk", "build", "--json", "--kernel", kernel,
            "--image", f"{PREFIX}-{uuid.uuid4().hex[:8]}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}"]
    for pkg in packages:
        argv += ["--dkms", str(pkg.tree)]
    print(f"building the driver images for {kernel} (not timed): "
          f"{', '.join(p.name for p in packages)}", file=sys.stderr)
    result = runner.run(argv, check=False, timeout=7200)
    outcomes = json.loads(result.stdout or '{"outcomes": []}')["outcomes"]
    made: Built = {}
    failed: dict[str, str] = {}
    try:
        for outcome in outcomes:
            if outcome["status"] != "built":
                failed[outcome["module"]] = f"{outcome['status']}: {outcome.get('reason', '')}"
                continue
            archive = out / f"{outcome['module']}.tar"
            runner.run(["skopeo", "copy", f"containers-storage:{outcome['image']}",
                        f"oci-archive:{archive}"], timeout=600)
            made[outcome["module"]] = (archive, outcome["modules"][0].split("=", 1)[0])
    finally:
        for outcome in outcomes:
            if outcome.get("image") and outcome["status"] == "built":
                buildah.remove_image(outcome["image"])
    return made, failed


def choose(names: list[str], count: int, toolkit: str, kernel: str, out: Path
           ) -> tuple[list[DkmsPackage], Built, dict[str, str]]:
    """The first `count` of `names` that dtk builds for `kernel` (a package that does
    not build has no image to prepare: it is reported and the next one taken)."""
    chosen: list[DkmsPackage] = []
    images: Built = {}
    skipped: dict[str, str] = {}
    queue = list(names)
    while len(chosen) < count and queue:
        batch, queue = queue[:count - len(chosen)], queue[count - len(chosen):]
        packages = load_packages(batch, toolkit, kernel)
        made, failed = build_images(packages, kernel, out)
        images |= made
        chosen += [p for p in packages if module_slug(p.name) in made]
        skipped |= {p.name: failed.get(module_slug(p.name), "no image")
                    for p in packages if module_slug(p.name) not in made}
    return chosen, images, skipped


def node_root(kernel: str, root: Path) -> None:
    """K's linux-image package in `root`, with the modules.dep its postinst makes."""
    index = open_archive().index
    with tempfile.TemporaryDirectory(prefix="dtk-bench-deb-") as tmp:
        for deb in index.download([f"linux-image-{kernel}"], Path(tmp)):
            unpack_deb(deb, root)
    runner.run(["depmod", "-b", str(root), kernel], timeout=600)


def declare(images: dict[str, tuple[Path, str]], kernel: str, root: Path) -> None:
    for name, (archive, module) in images.items():
        runner.run([sys.executable, "-m", "dtk", "node", "add", f"oci-archive:{archive}",
                    "--module", module, "--name", name, "--kernel", kernel,
                    "--root", str(root)], timeout=600)


def dtk_side(kernel: str, root: Path) -> tuple[float, dict[str, str]]:
    """Cold, as a host meets K the first time: nothing prepared, and an empty dtk cache
    (the facts read from K's vmlinuz are remembered there per kernel)."""
    shutil.rmtree(root / "var/lib/dtk", ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="dtk-bench-cache-") as cache:
        start = time.monotonic()
        result = runner.run([sys.executable, "-m", "dtk", "node", "prepare", "--kernel",
                             kernel, "--root", str(root), "--json"], check=False,
                            timeout=3600, env={"DTK_CACHE_DIR": cache})
        wall = time.monotonic() - start
    return wall, {o["name"]: ("ready" if o["ready"] else "NOT READY: " + o["reason"])
                  for o in json.loads(result.stdout)}


def dkms_side(packages: list[DkmsPackage], kernel: str) -> tuple[float, dict[str, str]]:
    with no_signing(), registered(packages):
        start = time.monotonic()
        runner.run(["dkms", "autoinstall", "-k", kernel], check=False, timeout=7200)
        wall = time.monotonic() - start
        # autoinstall's exit status does not say which failed: dkms status does
        status = runner.run(["dkms", "status", "-k", kernel], check=False).stdout
    results = {}
    for pkg in packages:
        line = next((ln for ln in status.splitlines() if ln.startswith(f"{pkg.name}/")), "")
        results[pkg.name] = line.rsplit(":", 1)[-1].strip() or "not built"
    return wall, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", default=None,
                        help="comma-separated *-dkms packages (default: all, largest first)")
    parser.add_argument("--kernel", default=None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--side", choices=("both", "dkms", "dtk"), default="both",
                        help="time one side only (the other is skipped)")
    parser.add_argument("--count", type=int, default=3,
                        help="how many of the packages (the first that dtk builds for K)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: dkms and apt-get need it")
    kernel = args.kernel or default_kernels()[0]
    names = args.packages.split(",") if args.packages else largest_dkms()
    archive = open_archive()
    toolkit = ensure_toolkit(kernel, "auto", distro=archive)  # not timed
    updates = Path("/lib/modules") / kernel / "updates"
    if updates.exists():
        raise SystemExit(f"{updates} already exists on the host; refusing to touch it")
    install_host_packages([kernel])
    before = set(updates.parent.iterdir())  # the headers' build/ and source/ links
    ensure_base(archive.index, archive.os.arch)
    walls: dict[str, list[float]] = {n: [] for n in ("dkms", "dtk") if args.side in (n, "both")}
    results: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="dtk-bench-node-") as tmp:
        packages, images, skipped = choose(names, args.count, toolkit.name, kernel,
                                           Path(tmp))
        print(f"packages: {', '.join(p.name for p in packages)}; kernel {kernel}",
              file=sys.stderr)
        root = Path(tmp) / "root"
        node_root(kernel, root)
        declare(images, kernel, root)
        try:
            for _ in range(args.rounds):  # alternating, so that other load hits both
                if "dkms" in walls:
                    wall, results["dkms"] = dkms_side(packages, kernel)
                    walls["dkms"].append(wall)
                if "dtk" in walls:
                    wall, results["dtk"] = dtk_side(kernel, root)
                    walls["dtk"].append(wall)
        finally:  # dkms's modules and the depmod index it made for K
            for made in set(updates.parent.iterdir()) - before:
                shutil.rmtree(made) if made.is_dir() else made.unlink()
    for name, why in skipped.items():
        print(f"left out: {name}: dtk build for {kernel} {why}")
    report(walls, results, packages, kernel)


def report(walls: dict[str, list[float]], results: dict[str, dict[str, str]],
           packages: list[DkmsPackage], kernel: str) -> None:
    load = os.getloadavg()
    print(f"\n{len(packages)} DKMS packages, kernel {kernel}, {os.cpu_count()} cores, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")
    print(f"{'PACKAGE':32} {'KB':>6} {'DKMS AUTOINSTALL':24} DTK NODE PREPARE")
    for pkg in packages:
        print(f"{pkg.name:32} {source_bytes(pkg.tree) // 1024:>6} "
              f"{results.get('dkms', {}).get(pkg.name, '-'):24} "
              f"{results.get('dtk', {}).get(module_slug(pkg.name), '-')}")
    for name, times in walls.items():
        print(f"{name}: wall {', '.join(f'{s:.1f}s' for s in times)}")
    best = {name: min(times) for name, times in walls.items()}
    if len(best) < 2:
        return
    print(f"kernel installed -> drivers ready: dkms autoinstall {best['dkms']:.1f}s, "
          f"dtk node prepare {best['dtk']:.1f}s, ratio dkms/dtk = "
          f"{best['dkms'] / best['dtk']:.1f}")


if __name__ == "__main__":
    main()
