"""`dtk build`: driver containers for many modules and kernels at once; `dtk build prune`."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from dtk.cli.buildplan import missing_toolkits, plan_build, run_build, split_matrix
from dtk.cli.buildreq import BuildRequest, build_input_options, refuse_at_once, sources_of
from dtk.cli.common import (
    TaggedTally,
    human_size,
    interrupt_summary,
    json_option,
    monitor,
    print_json,
    print_table,
    registry_auth_options,
    say,
    stderr,
)
from dtk.distro import catalog_problems
from dtk.distro.debian import DebianArchive
from dtk.driver import shard
from dtk.driver import sources as src
from dtk.driver.matrix import failed
from dtk.driver.naming import module_slug
from dtk.driver.outcome import Outcome, Status
from dtk.driver.plan import plan_matrix
from dtk.driver.prune import plan_prune, prune
from dtk.driver.shard import Shard
from dtk.errors import DtkError
from dtk.progress import NullMonitor


def request_from_args(argv: list[str]) -> BuildRequest:
    """The request a `dtk build ARGV` command line makes, refused as `dtk build` would
    refuse it before any work (parsed by build's own parser)."""
    with build_cmd.make_context("dtk build", list(argv)) as ctx:
        values = {k: v for k, v in ctx.params.items() if k in _REQUEST_FIELDS}
    request = BuildRequest(**values)
    refuse_at_once(request, local=False)
    return request


_REQUEST_FIELDS = {f.name for f in fields(BuildRequest)}


@click.group("build", invoke_without_command=True)
@build_input_options
@click.option("--push", is_flag=True, help="Push each built image to its registry.")
@registry_auth_options("for pushing and for pulling FROM images")
@click.option("--exit-zero", is_flag=True,
              help="Exit 0 even when cells fail to compile: their failures are results, in "
                   "the output, for `dtk report merge` to judge (what `dtk render job` runs). "
                   "A failure that says nothing about the cell (a full disk, a registry, a "
                   "tool) still exits 1, so that the CI system or Kubernetes retries it.")
@click.option("--dry-run", is_flag=True,
              help="Show the cells (of --shard's part) and the images they make, and the "
                   "toolkits that would be built (with their size); build nothing. DKMS "
                   "sources are named by their dkms.conf, read in a toolkit this machine has.")
@click.option("--plan", "plan_only", is_flag=True,
              help="Show every cell with its key (input hash) and its shard (--shard I/N); "
                   "builds no cell and no toolkit (a cell whose toolkit is missing has no "
                   "key yet; the 10 MB base image is made).")
@json_option
@click.pass_context
def build_cmd(ctx: click.Context, /, *, dry_run: bool, plan_only: bool, as_json: bool,
              exit_zero: bool, **values: Any) -> None:
    """Build driver containers: every module for every kernel, in parallel."""
    if ctx.invoked_subcommand:
        _no_build_options(ctx)
        return
    started = time.monotonic()
    request = BuildRequest(**values)
    refuse_at_once(request)
    found = sources_of(request)  # before any network
    archive, kernels = request.archive_and_kernels()
    mon = monitor(as_json)
    if dry_run:
        _dry_run(request, found, archive, kernels, as_json=as_json)
        return
    if plan_only:
        planned = plan_build(request, found, archive, kernels, mon, make=False)
        _print_plan(shard.plan_json(planned.matrix, request.part), as_json=as_json)
        return
    tally = TaggedTally(mon)
    with interrupt_summary(tally):
        run = run_build(request, found, archive, kernels, tally)
    outcomes, log_dir = run.outcomes, run.log_dir
    wall = time.monotonic() - started
    if as_json:
        print_json({"outcomes": [o.to_json() for o in outcomes], "log_dir": str(log_dir),
                    "wall_seconds": round(wall, 1), "matrix": run.matrix_json()})
    else:
        print_outcomes(outcomes, log_dir, wall)
    if any(o.retry or not exit_zero for o in failed(outcomes)):
        # Not ctx.exit: the entry point runs click with standalone_mode=False, which
        # turns Exit into a return value that nobody reads.
        raise SystemExit(1)


def _no_build_options(ctx: click.Context) -> None:
    """`dtk build -f CF prune` would silently drop -f: options given before a
    subcommand belong to `dtk build` itself, and are an error there."""
    given = [max(p.opts, key=len) for p in ctx.command.params if p.name
             and ctx.get_parameter_source(p.name) not in (ParameterSource.DEFAULT, None)]
    if given:
        verb = "belongs" if len(given) == 1 else "belong"
        raise DtkError(f"{', '.join(given)} {verb} to `dtk build`, not to `dtk build "
                       f"{ctx.invoked_subcommand}`",
                       hint=f"see `dtk build {ctx.invoked_subcommand} --help` for its options")


def _dry_run(request: BuildRequest, found: list[src.Source], archive: DebianArchive,
             kernels: list[str], *, as_json: bool) -> None:
    """The cells a build (of --shard's part) would settle, named and split as the build
    names and splits them (DKMS sources read in a toolkit this machine has; no toolkit
    is made), the toolkits it would build, and the kernels the archive lacks."""
    known = catalog_problems(archive.kernels())
    unknown = {k: problem for k in kernels if (problem := known(k))}
    good = [k for k in kernels if k not in unknown]
    split = split_matrix(request, found, archive, good, NullMonitor(), part=request.part,
                         make=False)
    sources = split.sources
    if not split.read_dkms:  # named after the package or directory until dkms.conf is read
        sources = sources + [src.BrokenSource(module_slug(Path(d).name or d), "")
                             for d in request.dkms]
    cells = [c for c in plan_matrix(sources, good, {}, None, request.options).cells
             if not split.read_dkms or c.key in split.keep]
    # The toolkits this part's cells need (all, while the split is not known yet).
    missing = missing_toolkits(split.kernels if split.read_dkms else good, archive)
    rows = [{"module": c.module, "kernel": c.kernel, "image": c.image} for c in cells]
    guessed = None if split.read_dkms else (
        "DKMS sources are named by their dkms.conf, read in a toolkit, and none of these "
        "kernels has one on this machine: their names (and images) are guessed from the "
        "package or directory" + (", and --shard's split is not known yet" if request.part
                                  else ""))
    if as_json:
        print_json({"dry_run": True, "shard": str(request.part) if request.part else None,
                    "cells": rows, "names_guessed": bool(guessed),
                    "toolkits_to_build": [{"toolkit": t, "kernels": h, "package_bytes": b}
                                          for t, h, b in missing],
                    "unknown_kernels": [{"kernel": k, "reason": why}
                                        for k, why in unknown.items()]})
    else:
        _print_dry_run(rows, missing, unknown, guessed, request.part)
    if unknown:  # their cells would fail: the dry run says so the same way
        raise SystemExit(1)


def _print_dry_run(cells: list[dict[str, str]], missing: list[tuple[str, str, int]],
                   unknown: dict[str, str], guessed: str | None, part: Shard | None) -> None:
    print_table(["MODULE", "KERNEL", "IMAGE"], [[c["module"], c["kernel"], c["image"]]
                                                for c in cells])
    for tag, held, size in missing:
        say(f"would build toolkit {tag} for {held}"
            + (f" (about {human_size(size)} of kernel packages)" if size else ""))
    for kernel, why in unknown.items():
        say(f"not in the archive, would fail: {kernel}: {why}", err=True)
    if guessed:
        say(f"note: {guessed}", err=True)
    say(f"dry run: {len(cells)} cell(s)" + (f" of shard {part}" if part else "")
        + f", {len(missing)} toolkit(s) to build"
        + (f", {len(unknown)} kernel(s) not in the archive" if unknown else "")
        + "; nothing was built")


def _print_plan(plan: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json(plan)
        return
    print_table(["MODULE", "KERNEL", "SHARD", "KEY"],
                [[c["module"], c["kernel"], str(c["shard"]),
                  c["key"] or f"({c['error'].splitlines()[0]})"] for c in plan["cells"]])
    loads = plan["loads"]
    each = (", ".join(map(str, loads)) if len(loads) <= _LOADS_LISTED else
            f"from {min(loads)} to {max(loads)} (--json lists each)")
    say(f"{len(plan['cells'])} cell(s) in {plan['shards']} shard(s); estimated load per "
        f"shard (bytes of source): {each}")


_LOADS_LISTED = 8  # more shards than this: the range of their loads, not each


def print_outcomes(outcomes: list[Outcome], log_dir: Path | str, wall: float) -> None:
    """The build's table, its notes and failures, and a summary (also `dtk report merge`'s)."""
    rows = []
    for o in outcomes:
        # A failure's reason is printed once, below the table, in full.
        detail = ", ".join(o.modules) if o.status is Status.BUILT else (
            "see below" if o.status is Status.FAILED else o.reason.splitlines()[0])
        state = o.state + (" +pushed" if o.pushed else "")
        rows.append([o.module, o.kernel, state, f"{o.seconds:.1f}", detail])
    print_table(["MODULE", "KERNEL", "STATUS", "SECONDS", "MODULES / REASON"], rows)
    for o in outcomes:
        for note in o.notes:
            stderr(f"note: {o.module} for {o.kernel}: {note}")
    for o in failed(outcomes):
        stderr(f"\n{o.module} for {o.kernel} failed: {o.reason}")
        for line in o.tail:
            stderr(f"    {line}")
        if o.log:
            stderr(f"  full log: {o.log}")
    counts = {s: sum(o.status is s for o in outcomes) for s in Status}
    images = sorted({o.image for o in outcomes if o.status is Status.BUILT})
    say(f"\n{counts[Status.BUILT]} built, {counts[Status.EXCLUDED]} excluded, "
        f"{counts[Status.FAILED]} failed in {wall:.1f}s"
        + (f"; images: {', '.join(images)}" if images else ""))
    say(f"logs: {log_dir}")


@build_cmd.command("prune")
@click.option("--all", "everything", is_flag=True,
              help="Also remove tagged driver images and toolkit-plus-dependency layers "
                   "(all are rebuilt on demand).")
@click.option("--older-than", type=float, default=None, metavar="DAYS",
              help="Only driver images older than this (tagged ones included).")
@click.option("--dry-run", is_flag=True, help="Only list what would be removed.")
@json_option
def prune_cmd(everything: bool, older_than: float | None, dry_run: bool, as_json: bool) -> None:
    """Remove untagged, leftover and (with --all) every driver image dtk's records say it
    made; images built FROM a driver image are never touched."""
    removals = plan_prune(everything=everything, older_than_days=older_than)
    if not dry_run:
        prune(removals)
    if as_json:
        print_json([{"kind": r.kind, "id": r.image_id, "names": list(r.names), "why": r.why}
                    for r in removals])
        return
    print_table(["KIND", "ID", "NAMES", "WHY"],
                [[r.kind, r.image_id[:12], ", ".join(r.names) or "<none>", r.why]
                 for r in removals])
    images = sum(r.kind == "image" for r in removals)
    say(("would remove" if dry_run else "removed") + f" {images} image(s)"
               + (f" and {len(removals) - images} container(s)" if len(removals) > images
                  else ""))


def register(group: click.Group) -> None:
    group.add_command(build_cmd)
