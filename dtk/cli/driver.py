"""`dtk build`: driver containers for many modules and kernels at once; `dtk build prune`."""

from __future__ import annotations

import functools
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from dtk import kernel as kern
from dtk import paths
from dtk.cli.common import (
    TaggedTally,
    human_size,
    interrupt_summary,
    json_option,
    monitor,
    print_json,
    print_table,
    registry_auth_options,
    sources_option,
    stderr,
)
from dtk.distro import catalog_problems
from dtk.distro.debian import DebianArchive
from dtk.distro.query import query_kernels
from dtk.distro.select import open_archive
from dtk.driver import dkmsconf, shard
from dtk.driver import sources as src
from dtk.driver.base import ensure_base
from dtk.driver.dkms import evaluate_confs
from dtk.driver.extras import Maker, resolve_extras
from dtk.driver.matrix import RunOptions, failed, resolve_toolkits, run_matrix, toolkit_target
from dtk.driver.naming import DEFAULT_TEMPLATE, image_name, module_slug
from dtk.driver.outcome import Outcome, Status
from dtk.driver.plan import BuildOptions, ImageRef, Matrix, plan_matrix
from dtk.driver.prune import plan_prune, prune
from dtk.driver.remotecache import RegistryCache, base_entry, check_repo, toolkit_entry
from dtk.driver.shard import Shard, parse_shard
from dtk.errors import DtkError
from dtk.progress import Monitor
from dtk.toolkit import plan as tplan
from dtk.toolkit.images import ToolkitImage, ensure_toolkit, is_current


def parse_build_args(pairs: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise DtkError(f"--build-arg '{pair}' is not KEY=VALUE")
        out.append((key, value))
    return tuple(out)


def _kernel_list(kernel: tuple[str, ...], query: str | None,
                 archive: DebianArchive) -> list[str]:
    wanted = list(kernel) + (query_kernels(query, archive.kernels()) if query else [])
    if not wanted:
        raise DtkError("no kernel given", hint="pass --kernel RELEASE (repeatable) or "
                       "--kernels QUERY, e.g. --kernels 6.1,latest")
    return list(dict.fromkeys(wanted))


def _containerfile_sources(files: tuple[Path, ...], context: Path | None,
                           dkms: tuple[str, ...], mod_name: str | None) -> list[src.Source]:
    if not files and not dkms:
        raise DtkError("nothing to build", hint="pass -f Containerfile and/or --dkms SRC")
    if context and len(files) > 1:
        raise DtkError("--context applies to a single -f Containerfile")
    return [src.containerfile_source(f, context, mod_name if len(files) == 1 and not dkms
                                     else None) for f in files]


def _evaluator(toolkits: dict[str, ImageRef | str]) -> tuple[str, src.DkmsEvaluator]:
    """dkms.conf is evaluated inside the first kernel's toolkit (never on the host)."""
    for kernel, toolkit in toolkits.items():
        if isinstance(toolkit, ImageRef):
            return kernel, functools.partial(evaluate_confs, toolkit.name,
                                              image_id=toolkit.image_id)

    def unavailable(trees: list[src.DkmsTree], kernel: str) -> list[dkmsconf.DkmsConf]:
        raise DtkError("no kernel has a toolkit to evaluate dkms.conf in")
    return next(iter(toolkits), ""), unavailable


def _needs_base(sources: list[src.Source]) -> bool:
    return any(isinstance(s, src.DkmsGroup)
               or (isinstance(s, src.ContainerfileSource) and "DTK_BASE" in s.text)
               for s in sources)


_BUILD_INPUTS = (
    click.option("-f", "--file", "files", multiple=True, type=click.Path(path_type=Path),
                 help="KMM-style Containerfile (repeatable); DTK_AUTO, KERNEL_FULL_VERSION, "
                      "MOD_NAME… are injected as build args."),
    click.option("--context", type=click.Path(path_type=Path, file_okay=False), default=None,
                 help="Build context (default: the Containerfile's directory)."),
    click.option("--dkms", multiple=True, metavar="SRC",
                 help="DKMS source tree (with dkms.conf) or a Debian *-dkms package "
                      "(repeatable)."),
    click.option("--kernel", "kernel", multiple=True, metavar="RELEASE",
                 help="Kernel release as `uname -r` prints it (repeatable)."),
    click.option("--kernels", "query", default=None, metavar="QUERY|@FILE",
                 help="Kernels from the catalog: e.g. 'rt,latest', '6.1,standard', or @file."),
    click.option("--build-arg", "build_args", multiple=True, metavar="KEY=VALUE",
                 help="Extra build arg; KMM's own names win on conflict, as in KMM."),
    click.option("--image", "template", default=DEFAULT_TEMPLATE, show_default=True,
                 help="Image name template with KMM's variables."),
    click.option("--mod-name", default=None, help="MOD_NAME (default: the source's name)."),
    click.option("--mod-namespace", default="default", show_default=True,
                 help="MOD_NAMESPACE."),
    click.option("-j", "--jobs", type=click.IntRange(1), default=None,
                 help="Cells built at once (default: number of cores)."),
    click.option("--rebuild", is_flag=True,
                 help="Build every cell again: no cache hit, no remembered DKMS failure."),
    click.option("--shard", default=None, metavar="I/N",
                 help="Only the cells of part I of N: the same deterministic split on "
                      "every machine (balanced by source size)."),
    click.option("--cache", default=None, metavar="REGISTRY/REPO",
                 help="A registry repository every machine shares: cells found there under "
                      "their input hash are taken, not built; built cells are stored there."),
    sources_option,
)


def build_input_options(func: Callable[..., None]) -> Callable[..., None]:
    """What to build for which kernels: the options `dtk build` and `dtk prove` share."""
    for option in reversed(_BUILD_INPUTS):
        func = option(func)
    return func


@dataclass(frozen=True)
class BuildRequest:
    """The values of build_input_options (and, for dtk build, what to push)."""

    files: tuple[Path, ...]
    context: Path | None
    dkms: tuple[str, ...]
    kernel: tuple[str, ...]
    query: str | None
    build_args: tuple[str, ...]
    template: str
    mod_name: str | None
    mod_namespace: str
    jobs: int | None
    sources: Path | None
    rebuild: bool = False
    shard: str | None = None
    cache: str | None = None
    push: bool = False
    tls_verify: bool | None = None
    authfile: Path | None = None

    @property
    def options(self) -> BuildOptions:
        return BuildOptions(self.template, self.mod_namespace, self.mod_name,
                            parse_build_args(self.build_args), self.push,
                            pull_tls_verify=self.tls_verify,  # FROM pulls too
                            force=self.rebuild)

    def __post_init__(self) -> None:
        self.part  # noqa: B018 -- a bad --shard is refused before any work
        if self.cache:
            check_repo(self.cache)

    @property
    def part(self) -> Shard | None:
        return parse_shard(self.shard) if self.shard else None

    def registry_cache(self, mon: Monitor) -> RegistryCache | None:
        if not self.cache:
            return None
        return RegistryCache(check_repo(self.cache), mon.step, self.tls_verify, self.authfile)

    def archive_and_kernels(self) -> tuple[DebianArchive, list[str]]:
        archive = open_archive(self.sources)
        return archive, _kernel_list(self.kernel, self.query, archive)


@dataclass(frozen=True)
class BuildRun:
    """A run's outcomes (this shard's cells), where its logs are, and the whole
    matrix's cells in the plan's order (what `dtk report merge` puts shards back by)."""

    outcomes: list[Outcome]
    log_dir: Path
    matrix: list[str]
    shard: Shard | None

    def matrix_json(self) -> dict[str, Any]:
        return {"cells": self.matrix, "shard": str(self.shard) if self.shard else "1/1"}


def run_build(request: BuildRequest, found: list[src.Source], archive: DebianArchive,
              kernels: list[str], mon: Monitor) -> BuildRun:
    """Toolkits, DKMS sources, the base, the matrix: every cell of this shard built
    (or a cache hit)."""
    cache = request.registry_cache(mon)
    planned = plan_build(request, found, archive, kernels, mon, cache=cache, part=request.part)
    jobs = request.jobs or os.cpu_count() or 1
    options = RunOptions(jobs, planned.log_dir, request.tls_verify, request.authfile,
                         cache=cache, prepare=planned.extras.prepare)
    outcomes = run_matrix(planned.matrix, options, mon)
    return BuildRun(outcomes, planned.log_dir, planned.whole, request.part)


@dataclass(frozen=True)
class Planned:
    """The cells to build (one shard's, or all), where their logs go, and the names of
    the whole matrix's cells in the plan's order."""

    matrix: Matrix
    log_dir: Path
    whole: list[str]
    extras: Maker  # makes a cell's toolkit-plus-dependencies layer when it compiles


def plan_build(request: BuildRequest, found: list[src.Source], archive: DebianArchive,
               kernels: list[str], mon: Monitor, *, cache: RegistryCache | None = None,
               part: Shard | None = None, make: bool = True) -> Planned:
    """The matrix (`part`'s cells only) with every cell's input hash: toolkits, DKMS
    sources and the base are made (or found) on the way, no cell is built. A shard
    makes only the toolkits of its own kernels (and the first kernel's, in which
    dkms.conf is read: the split depends on what it says). Extras layers are only
    planned (made when a cell on one compiles). Without `make` (--plan) no
    toolkit is made or pulled: a cell whose toolkit is not here has
    no key yet (its key covers the toolkit's image id, which only exists once the
    toolkit does), and says so."""
    toolkits: dict[str, ImageRef | str] = {}

    def need(wanted: list[str]) -> None:
        missing = [k for k in wanted if k not in toolkits]
        for tag, held, size in _missing_toolkits(missing, archive) if make else ():
            mon.step(f"toolkit {tag} for {held} is missing: building it"  # up to 1.8 GB
                     + (f" (about {human_size(size)} of kernel packages)" if size else ""))
        toolkits.update(_toolkits(missing, archive, mon, cache, make=make) if missing else {})

    if request.dkms:
        if part:  # dkms.conf is read in the first kernel's toolkit that can be made
            for kernel in kernels:
                need([kernel])
                if isinstance(toolkits.get(kernel), ImageRef):
                    break
        else:
            need(kernels)
        if not make and not any(isinstance(t, ImageRef) for t in toolkits.values()):
            raise DtkError("--plan reads dkms.conf inside a toolkit (it names the cells), "
                           "and no kernel of the matrix has one on this machine",
                           hint=f"make one first: dtk toolkit build --kernel {kernels[0]} "
                                "(with --cache REPO it is taken from the cache if there)")
        found = found + src.resolve_dkms(request.dkms, archive.index, *_evaluator(toolkits))
    whole = [f"{source.name}@{kernel}" for source in found for kernel in kernels]
    keep = shard.keys_in(found, kernels, part) if part else set(whole)
    mine = [k for k in kernels if any(f"{s.name}@{k}" in keep for s in found)]
    need(mine)
    base = _base(archive, cache) if _needs_base(found) else None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    log_dir = paths.state_dir() / "build" / f"{stamp}-{os.getpid()}"
    ours = {k: toolkits[k] for k in mine}
    maker = Maker()
    extras = resolve_extras(found, ours, (archive.index, archive.os.arch), log_dir, mon,
                            maker=maker)
    matrix = plan_matrix(found, mine, ours, base, request.options, extras=extras)
    return Planned(Matrix(tuple(c for c in matrix.cells if c.key in keep)), log_dir, whole,
                   maker)


def sources_of(request: BuildRequest) -> list[src.Source]:
    """The Containerfile sources (DKMS ones are resolved with a toolkit, later)."""
    return _containerfile_sources(request.files, request.context, request.dkms,
                                  request.mod_name)


@click.group("build", invoke_without_command=True)
@build_input_options
@click.option("--push", is_flag=True, help="Push each built image to its registry.")
@registry_auth_options("for pushing and for pulling FROM images")
@click.option("--dry-run", is_flag=True,
              help="Show the cells and the toolkits that would be built (with their size); "
                   "build nothing.")
@click.option("--plan", "plan_only", is_flag=True,
              help="Show every cell with its key (input hash) and its shard (--shard I/N); "
                   "builds no cell and no toolkit (a cell whose toolkit is missing has no "
                   "key yet; the 10 MB base image is made).")
@json_option
@click.pass_context
def build_cmd(ctx: click.Context, /, *, dry_run: bool, plan_only: bool, as_json: bool,
              **values: Any) -> None:
    """Build driver containers: every module for every kernel, in parallel."""
    if ctx.invoked_subcommand:
        _no_build_options(ctx)
        return
    started = time.monotonic()
    request = BuildRequest(**values)
    for release in request.kernel:  # "did you mean" for a tag-form kernel, before any work
        kern.parse(release)
    if request.push and request.template.startswith("localhost/"):
        raise DtkError("--push needs a registry in --image",
                       hint="e.g. --image "
                            "127.0.0.1:5000/drivers/${MOD_NAME}:${KERNEL_FULL_VERSION}")
    options = request.options
    found = sources_of(request)  # before any network
    archive, kernels = request.archive_and_kernels()
    mon = monitor(as_json)
    if dry_run:
        known = catalog_problems(archive.kernels())
        unknown = {k: problem for k in kernels if (problem := known(k))}
        _print_dry_run(found, request.dkms, [k for k in kernels if k not in unknown],
                       missing=_missing_toolkits(kernels, archive), options=options,
                       unknown=unknown, as_json=as_json)
        if unknown:  # their cells would fail: the dry run says so the same way
            raise SystemExit(1)
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
    if failed(outcomes):
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


def _missing_toolkits(kernels: list[str], archive: DebianArchive
                      ) -> list[tuple[str, str, int]]:
    """(tag, kernels it holds, bytes of kernel packages) of each toolkit the run builds."""
    known = catalog_problems(archive.kernels())
    targets = dict.fromkeys(toolkit_target(k, known) for k in kernels if known(k) is None)
    missing = []
    for target in targets:
        plan = tplan.plan_toolkit(archive, target)
        if not is_current(plan):
            packages = [p for k in (plan.kernel, plan.rt) if k for p in k.packages]
            missing.append((plan.tag, ", ".join(plan.kernels), archive.installed_bytes(packages)))
    return missing


def _print_dry_run(found: list[src.Source], dkms: tuple[str, ...], kernels: list[str], *,
                   missing: list[tuple[str, str, int]], options: BuildOptions,
                   unknown: dict[str, str], as_json: bool) -> None:
    names = [s.name for s in found] + [module_slug(Path(d).name or d) for d in dkms]
    cells = [{"module": n, "kernel": k,
              "image": image_name(options.image_template, k, options.mod_name or n,
                                  options.mod_namespace)} for n in names for k in kernels]
    toolkits = [{"toolkit": t, "kernels": h, "package_bytes": b} for t, h, b in missing]
    if as_json:
        print_json({"dry_run": True, "cells": cells, "toolkits_to_build": toolkits,
                    "unknown_kernels": [{"kernel": k, "reason": why}
                                        for k, why in unknown.items()]})
        return
    print_table(["MODULE", "KERNEL", "IMAGE"], [[c["module"], c["kernel"], c["image"]]
                                                for c in cells])
    for tag, held, size in missing:
        click.echo(f"would build toolkit {tag} for {held}"
                   + (f" (about {human_size(size)} of kernel packages)" if size else ""))
    for kernel, why in unknown.items():
        click.echo(f"not in the archive, would fail: {kernel}: {why}", err=True)
    click.echo(f"dry run: {len(cells)} cell(s), {len(missing)} toolkit(s) to build"
               + (f", {len(unknown)} kernel(s) not in the archive" if unknown else "")
               + "; nothing was built")


def _base(archive: DebianArchive, cache: RegistryCache | None) -> ImageRef:
    """The final stage's base; with a cache, taken from it when there, stored when made."""
    if cache is None:
        return ensure_base(archive.index, archive.os.arch)
    base = ensure_base(archive.index, archive.os.arch,
                       fetch=lambda tag: cache.take_input(tag, *base_entry(tag)))
    cache.store_input(base.name, *base_entry(base.name))
    return base


def _print_plan(plan: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print_json(plan)
        return
    print_table(["MODULE", "KERNEL", "SHARD", "KEY"],
                [[c["module"], c["kernel"], str(c["shard"]),
                  c["key"] or f"({c['error'].splitlines()[0]})"] for c in plan["cells"]])
    click.echo(f"{len(plan['cells'])} cell(s) in {plan['shards']} shard(s); estimated "
               "load per shard (bytes of source): " + ", ".join(map(str, plan["loads"])))


def _toolkits(kernels: list[str], archive: DebianArchive, mon: Monitor,
              cache: RegistryCache | None = None, *, make: bool = True
              ) -> dict[str, ImageRef | str]:
    """Each kernel's toolkit; with a cache, taken from it when there (storing 1-2 GB
    toolkits is `dtk toolkit build --cache`'s job, not every worker's). Without `make`,
    only the toolkits this machine has: the others are a reason instead."""
    def ensure(release: str) -> ToolkitImage:
        mon.step(f"toolkit for {release}")
        if not make:
            plan = tplan.plan_toolkit(archive, release, "auto")
            if not is_current(plan):
                raise DtkError(f"key unknown until toolkit {plan.tag} exists (--plan makes "
                               f"none; `dtk toolkit build --kernel {release}` does)")
        elif cache:
            plan = tplan.plan_toolkit(archive, release, "auto")
            if not is_current(plan):
                cache.take_input(plan.tag, *toolkit_entry(plan))
        return ensure_toolkit(release, "auto", distro=archive, monitor=mon)
    return resolve_toolkits(kernels, catalog_problems(archive.kernels()), ensure)


def print_outcomes(outcomes: list[Outcome], log_dir: Path | str, wall: float) -> None:
    """The build's table, its notes and failures, and a summary (also `dtk report merge`'s)."""
    rows = []
    for o in outcomes:
        # A failure's reason is printed once, below the table, in full.
        detail = ", ".join(o.modules) if o.status is Status.BUILT else (
            "see below" if o.status is Status.FAILED else o.reason.splitlines()[0])
        state = o.status.value + (" (cached)" if o.cached else "") + (" +pushed" if o.pushed
                                                                         else "")
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
    click.echo(f"\n{counts[Status.BUILT]} built, {counts[Status.EXCLUDED]} excluded, "
               f"{counts[Status.FAILED]} failed in {wall:.1f}s; images: "
               + ", ".join(sorted({o.image for o in outcomes if o.status is Status.BUILT}))
               + f"\nlogs: {log_dir}")


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
    click.echo(("would remove" if dry_run else "removed") + f" {images} image(s)"
               + (f" and {len(removals) - images} container(s)" if len(removals) > images
                  else ""))


def register(group: click.Group) -> None:
    group.add_command(build_cmd)
