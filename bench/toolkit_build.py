"""Benchmark: toolkits for three kernels, dtk vs a naive Containerfile per kernel.

Both sides start cold in a private container storage and cache (nothing the
user has is touched or reused) and build FROM the same minimal Debian base,
which is made first and not timed. The naive side is what a user writes
without dtk: one Containerfile per kernel, `FROM` the base, one
`RUN apt-get install` of the tools and that kernel's packages.

    .venv/bin/python bench/toolkit_build.py [--kernels K1,K2,K3]

Prints wall time and container-storage growth for each side and the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from dtk import run as runner
from dtk.distro.select import open_archive
from dtk.toolkit import plan as tplan


def _du(path: Path) -> int:
    out = runner.run(["du", "-sb", str(path)], check=False).stdout.split()
    return int(out[0]) if out else 0


def _check_private_storage(graph: Path) -> None:
    """Refuse to run (and later wipe) anything unless buildah really uses our storage."""
    info = runner.run(["buildah", "info", "--format", "{{.store.GraphRoot}}"]).stdout.strip()
    if Path(info) != graph:
        raise SystemExit(f"buildah uses {info}, not the private {graph}; refusing to run")


def _naive_containerfile(plan: tplan.ToolkitPlan) -> str:
    packages = " ".join([*plan.tools, *(p.name for p in plan.kernel.packages)])
    return (f"FROM {plan.base_tag}\n"
            f"RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
            f"--no-install-recommends {packages}\n")


def _time(argv: list[str], cwd: Path | None = None) -> float:
    start = time.monotonic()
    runner.run(argv, cwd=cwd, timeout=3600)
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", help="comma-separated releases (default: newest 3 "
                        "standard 6.1 ABIs)")
    args = parser.parse_args()
    archive = open_archive()
    kernels = args.kernels.split(",") if args.kernels else [
        e.release for e in archive.kernels() if e.line == "6.1" and e.flavour == "standard"][:3]
    work = Path(tempfile.mkdtemp(prefix="dtk-bench-"))
    graph = work / "storage"
    conf = work / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{graph}"\n'
                    f'runroot = "{work / "run"}"\n')
    os.environ.update(CONTAINERS_STORAGE_CONF=str(conf), DTK_CACHE_DIR=str(work / "cache"),
                      DTK_STATE_DIR=str(work / "state"))
    dtk = [sys.executable, "-m", "dtk"]
    _check_private_storage(graph)
    try:
        plans = [tplan.plan_toolkit(archive, k, "none") for k in kernels]
        print(f"kernels: {', '.join(kernels)}  (RT siblings off on both sides)")
        # The base both sides start FROM, built by dtk and not timed.
        runner.run([*dtk, "toolkit", "build", "--kernel", kernels[0], "--rt-kernel", "none"],
                   timeout=3600)
        for plan in plans[:1]:
            runner.run(["buildah", "rmi", plan.tag, plan.tools_tag], check=False)
        shutil.rmtree(work / "cache" / "apt", ignore_errors=True)
        runner.run(["buildah", "rmi", "--prune"], check=False)
        disk0 = _du(graph)
        dtk_times = [_time([*dtk, "toolkit", "build", "--kernel", k, "--rt-kernel", "none"])
                     for k in kernels]
        dtk_disk = _du(graph) - disk0
        naive_times = []
        for plan in plans:
            ctx = work / f"naive-{plan.release}"
            ctx.mkdir()
            (ctx / "Containerfile").write_text(_naive_containerfile(plan))
            naive_times.append(_time(["buildah", "bud", "--isolation", "chroot", "--layers=false",
                                      "-t", f"localhost/naive-toolkit:{plan.release}", "."],
                                     cwd=ctx))
        naive_disk = _du(graph) - disk0 - dtk_disk
        _report(kernels, dtk_times, naive_times, dtk_disk, naive_disk)
    finally:
        runner.run(["buildah", "rm", "--all"], check=False)
        runner.run(["buildah", "rmi", "--all", "--force"], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _report(kernels: list[str], dtk_times: list[float], naive_times: list[float],
            dtk_disk: int, naive_disk: int) -> None:
    print(f"{'kernel':28} {'dtk s':>8} {'naive s':>8}")
    for k, d, n in zip(kernels, dtk_times, naive_times, strict=True):
        print(f"{k:28} {d:8.1f} {n:8.1f}")
    print(f"{'total':28} {sum(dtk_times):8.1f} {sum(naive_times):8.1f}")
    print(f"disk (container storage)     {dtk_disk / 1e9:7.2f}G {naive_disk / 1e9:7.2f}G")
    print(f"wall-time ratio naive/dtk: {sum(naive_times) / sum(dtk_times):.2f}x; "
          f"disk ratio naive/dtk: {naive_disk / max(dtk_disk, 1):.2f}x")


if __name__ == "__main__":
    sys.exit(main())
