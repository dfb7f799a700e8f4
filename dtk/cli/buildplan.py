"""The matrix a build request makes: toolkits found or made, DKMS sources read, the split
over shards, every cell's key; and running it."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dtk import paths
from dtk.cli.buildreq import BuildRequest
from dtk.cli.common import human_size
from dtk.distro import catalog_problems
from dtk.distro.debian import DebianArchive
from dtk.driver import dkmsconf, shard
from dtk.driver import sources as src
from dtk.driver.base import ensure_base
from dtk.driver.dkms import evaluate_confs
from dtk.driver.extras import Maker, resolve_extras
from dtk.driver.matrix import RunOptions, resolve_toolkits, run_matrix, toolkit_target
from dtk.driver.outcome import Outcome
from dtk.driver.plan import ImageRef, Matrix, plan_matrix
from dtk.driver.remotecache import RegistryCache, base_entry, toolkit_entry
from dtk.driver.shard import Shard
from dtk.errors import DtkError
from dtk.progress import Monitor
from dtk.toolkit import plan as tplan
from dtk.toolkit.images import ToolkitImage, ensure_toolkit, is_current


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
    split = split_matrix(request, found, archive, kernels, mon, cache=cache, part=part,
                         make=make)
    if request.dkms and not split.read_dkms:
        known = catalog_problems(archive.kernels())
        here = next((k for k in kernels if known(k) is None), None)
        raise DtkError("--plan reads dkms.conf inside a toolkit (it names the cells), "
                       "and no kernel of the matrix has one on this machine",
                       hint=(f"make one first: dtk toolkit build --kernel {here} (with --cache "
                             "REPO it is taken from the cache if there)") if here else
                       "none of its kernels is in the archive: see `dtk kernels`")
    base = _base(archive, cache) if _needs_base(split.sources) else None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    log_dir = paths.state_dir() / "build" / f"{stamp}-{os.getpid()}"
    ours = {k: split.toolkits[k] for k in split.kernels}
    maker = Maker()
    extras = resolve_extras(split.sources, ours, (archive.index, archive.os.arch), log_dir,
                            mon, maker=maker)
    matrix = plan_matrix(split.sources, split.kernels, ours, base, request.options,
                         extras=extras)
    return Planned(Matrix(tuple(c for c in matrix.cells if c.key in split.keep)), log_dir,
                   split.whole, maker)


@dataclass(frozen=True)
class Split:
    """The matrix's sources (DKMS ones read in a toolkit, when one was there), the names
    of all its cells, those of this shard, the kernels they need, and the toolkits
    found or made on the way."""

    sources: list[src.Source]
    whole: list[str]
    keep: set[str]
    kernels: list[str]
    toolkits: dict[str, ImageRef | str]
    read_dkms: bool  # False: DKMS sources given, and no toolkit to read dkms.conf in


def split_matrix(request: BuildRequest, found: list[src.Source], archive: DebianArchive,
                 kernels: list[str], mon: Monitor, *, cache: RegistryCache | None = None,
                 part: Shard | None = None, make: bool = True) -> Split:
    """The cells `part` builds (every cell without a part); toolkits made on the way
    only with `make` (else those this machine has)."""
    toolkits: dict[str, ImageRef | str] = {}
    ensured: dict[str, ToolkitImage] = {}  # each toolkit made (or found) once

    def need(wanted: list[str]) -> None:
        missing = [k for k in wanted if k not in toolkits]
        for tag, held, size in missing_toolkits(missing, archive) if make else ():
            mon.step(f"toolkit {tag} for {held} is missing: building it"  # up to 1.8 GB
                     + (f" (about {human_size(size)} of kernel packages)" if size else ""))
        toolkits.update(_toolkits(missing, archive, mon, cache, make=make, memo=ensured)
                        if missing else {})

    read = True
    if request.dkms:
        if part:  # dkms.conf is read in the first kernel's toolkit that can be made
            for kernel in kernels:
                need([kernel])
                if isinstance(toolkits.get(kernel), ImageRef):
                    break
        else:
            need(kernels)
        read = any(isinstance(t, ImageRef) for t in toolkits.values())
        if read or make:  # made, and none could be: each DKMS cell fails saying why
            found = found + src.resolve_dkms(request.dkms, archive.index,
                                             *_evaluator(toolkits))
    whole = [f"{source.name}@{kernel}" for source in found for kernel in kernels]
    keep = shard.keys_in(found, kernels, part) if part else set(whole)
    mine = [k for k in kernels if any(f"{s.name}@{k}" in keep for s in found)]
    need(mine)
    return Split(found, whole, keep, mine, toolkits, read)


def missing_toolkits(kernels: list[str], archive: DebianArchive
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


def _base(archive: DebianArchive, cache: RegistryCache | None) -> ImageRef:
    """The final stage's base; with a cache, taken from it when there, stored when made."""
    if cache is None:
        return ensure_base(archive.index, archive.os.arch)
    base = ensure_base(archive.index, archive.os.arch,
                       fetch=lambda tag: cache.take_input(tag, *base_entry(tag)))
    cache.store_input(base.name, *base_entry(base.name))
    return base


def _toolkits(kernels: list[str], archive: DebianArchive, mon: Monitor,
              cache: RegistryCache | None = None, *, make: bool = True,
              memo: dict[str, ToolkitImage] | None = None) -> dict[str, ImageRef | str]:
    """Each kernel's toolkit; with a cache, taken from it when there (storing 1-2 GB
    toolkits is `dtk toolkit build --cache`'s job, not every worker's). Without `make`,
    only the toolkits this machine has: the others are a reason instead. `memo`: the
    toolkits an earlier call of the same run found, not looked for again."""
    memo = {} if memo is None else memo

    def ensure(release: str) -> ToolkitImage:
        if release not in memo:
            memo[release] = find(release)
        return memo[release]

    def find(release: str) -> ToolkitImage:
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
