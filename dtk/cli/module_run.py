"""`dtk module build | preflight | vmtest`: the executing half of `dtk module`."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import click

from dtk import paths
from dtk.cli.common import json_option, monitor, print_json, print_table, stderr
from dtk.cli.module import _kernel_options, _manifest_options, _note, _plan, module_group
from dtk.distro.select import open_archive
from dtk.kmm.build import BuildRequest, KernelResult, build_module


def log_dir(kind: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return paths.state_dir() / kind / f"{stamp}-{os.getpid()}"


@module_group.command("build")
@_manifest_options
@_kernel_options
@click.option("--push", is_flag=True, help="Push each image to its registry (KMM's cluster "
              "pulls from there), with the imageRepoSecret's credentials.")
@click.option("--rebuild", is_flag=True, help="Build and sign even images that exist.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=None,
              help="Images built at once (default: number of cores).")
@json_option
def build_cmd(*, files: tuple[Path, ...], namespace: str | None, module_name: str | None,
              kernel: tuple[str, ...], query: str | None, nodes_file: Path | None,
              sources: Path | None, push: bool, rebuild: bool, jobs: int | None,
              as_json: bool) -> None:
    """Build and sign every image the plan needs, as KMM's build and sign would.

    Images that exist (locally or in the registry) are kept unless
    imageRebuildTriggerGeneration changed or --rebuild is given.
    """
    started = time.monotonic()
    bundle, plan = _plan(files, namespace, module_name, (kernel, query, nodes_file, sources))
    request = BuildRequest(log_dir("module-build"), push=push, rebuild=rebuild,
                           jobs=jobs or os.cpu_count() or 1)
    request.log_dir.mkdir(parents=True, exist_ok=True)
    results = build_module(bundle, plan, request, monitor(as_json),
                           cache(lambda: open_archive(sources)))
    wall = time.monotonic() - started
    if as_json:
        print_json({"module": plan.module, "namespace": plan.namespace,
                    "results": [r.to_json() for r in results], "unmatched": list(plan.unmatched),
                    "log_dir": str(request.log_dir), "wall_seconds": round(wall, 1)})
    else:
        _report(results, wall)
    for k in plan.unmatched:
        _note(f"note: no mapping matches {k}; KMM loads nothing there")
    if any(r.failed for r in results):
        raise SystemExit(1)


def _report(results: list[KernelResult], wall: float) -> None:
    rows = [[r.kernel, r.image, r.action + (" (cached)" if r.cached else ""),
             r.pushed[:19] + "…" if r.pushed else "-", f"{r.seconds:.1f}s",
             r.reason.splitlines()[0] if r.reason else "-"] for r in results]
    print_table(["KERNEL", "IMAGE", "ACTION", "PUSHED", "TIME", "REASON"], rows)
    for r in results:
        if r.failed:
            stderr(f"\n{r.kernel} failed: {r.reason}")
            for line in r.tail:
                stderr(f"    {line}")
            if r.log:
                stderr(f"  full log: {r.log}")
    made = sum(r.action != "exists" and not r.failed for r in results)
    click.echo(f"\n{made} made, {sum(r.action == 'exists' for r in results)} existed, "
               f"{sum(r.failed for r in results)} failed in {wall:.1f}s")


def register(group: click.Group) -> None:
    """The commands are on `dtk module` already (module_group); nothing more to add."""
    del group
