"""Debian's whole `*-dkms` corpus, built, checked and proven by booting, in one command.

    .venv/bin/python bench/prove_corpus.py [--kernels K1,K2,K3] [--dkms-seconds 1600]
                                           [--rebuild]

Every `*-dkms` source package the machine's APT sources list (Debian 12: 30,
leaving out the debhelper add-on dh-dkms) x the newest 6.1 kernel, its RT
sibling and the newest 6.12 (toolkits are made first if missing, untimed),
through one `dtk prove`, then the same command again with nothing changed.
It prints the matrix's counts (built / failed / excluded; loaded /
init-failed / refused / …), the boots, both wall times, and the ratio to
`dkms build` of the same cells one after another (`--dkms-seconds`: about
1,600 s measured on this machine for the 90 cells). The images are removed
afterwards; the toolkit-plus-dependency layers stay (`dtk build prune --all`
removes them). `--rebuild` makes the first run a cold one even after earlier
runs: every cell compiles and no remembered DKMS failure is reused.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from dtk.distro.query import query_kernels
from dtk.distro.select import open_archive
from dtk.engine import buildah
from dtk.toolkit.images import ensure_toolkit

DTK = str(Path(sys.executable).parent / "dtk")
PREFIX = "localhost/dtk-bench-corpus"


def corpus() -> list[str]:
    names = subprocess.run(["apt-cache", "pkgnames"], capture_output=True, text=True,
                           check=True).stdout.split()
    return sorted(n for n in names if n.endswith("-dkms") and n != "dh-dkms")


def default_kernels() -> list[str]:
    """The newest 6.1 kernel and its RT sibling, and the newest 6.12: `--kernels`'s
    query language says it (dtk.distro.query)."""
    catalog = open_archive().kernels()
    return (query_kernels("6.1,standard,rt,latest", catalog)
            + query_kernels("6.12,standard,latest", catalog))


def prove(packages: list[str], kernels: list[str], html: Path, *,
          rebuild: bool = False) -> tuple[float, dict[str, Any]]:
    argv = [DTK, "prove", *(["--rebuild"] if rebuild else []),
            *(a for p in packages for a in ("--dkms", p)),
            *(a for k in kernels for a in ("--kernel", k)),
            "--image", PREFIX + "/${MOD_NAME}:${KERNEL_FULL_VERSION}", "--json",
            "--html", str(html)]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=7200, check=False)
    wall = time.monotonic() - start
    if not proc.stdout.strip():
        raise SystemExit(f"dtk prove printed no JSON (exit {proc.returncode}):\n"
                         + proc.stderr[-3000:])
    return wall, json.loads(proc.stdout)


def counts(result: dict[str, Any]) -> tuple[collections.Counter[str], collections.Counter[str]]:
    builds = collections.Counter(c["build"] for c in result["cells"])
    boots = collections.Counter(c["boot"] for c in result["cells"] if c["build"] == "built")
    return builds, boots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", default=None)
    parser.add_argument("--dkms-seconds", type=float, default=1600.0)
    parser.add_argument("--rebuild", action="store_true",
                        help="first run cold: compile every cell, forget remembered failures")
    args = parser.parse_args()
    kernels = args.kernels.split(",") if args.kernels else default_kernels()
    packages = corpus()
    for kernel in kernels:  # untimed: toolkits are made once and reused
        ensure_toolkit(kernel, "auto")
    try:
        first, result = prove(packages, kernels, Path("/tmp/dtk-corpus.html"),
                              rebuild=args.rebuild)
        again, _ = prove(packages, kernels, Path("/tmp/dtk-corpus-again.html"))
    finally:
        for row in buildah.images():
            for name in row.get("names") or ():
                if name.startswith(PREFIX + "/"):
                    buildah.remove_image(name)
    builds, boots = counts(result)
    print(f"{len(packages)} packages x {len(kernels)} kernels = {len(result['cells'])} cells")
    print("build: " + ", ".join(f"{n} {k}" for k, n in sorted(builds.items())))
    print("boot (built cells): " + ", ".join(f"{n} {k}" for k, n in sorted(boots.items())))
    print(f"boots: {result['total_boots']} ({result['boots']}); check/boot disagreements: "
          f"{result['disagreements']}")
    print(f"first run {first:.0f} s ({first / args.dkms_seconds:.2f}x of dkms's "
          f"{args.dkms_seconds:.0f} s for the builds alone); again, nothing changed: "
          f"{again:.1f} s")
    per_kernel: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter)
    for cell in result["cells"]:
        per_kernel[cell["kernel"]][cell["boot"] if cell["build"] == "built"
                                   else cell["build"]] += 1
    for kernel, row in per_kernel.items():
        print(f"  {kernel}: " + ", ".join(f"{n} {k}" for k, n in sorted(row.items())))


if __name__ == "__main__":
    main()
