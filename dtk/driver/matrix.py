"""Run a build matrix: toolkits first (serialised by their own API), then cells in parallel.

Every cell ends as built, failed or excluded; nothing one cell does can stop
another. A cell whose image already carries its input hash is a cache hit and
compiles nothing.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from dtk import kernel as kern
from dtk import paths
from dtk import run as runner
from dtk.driver import containerfile, dkms
from dtk.driver.outcome import CellFailedError, Outcome, Status, machine_fault, tail_of
from dtk.driver.plan import HASH_LABEL, Cell, ImageRef, Matrix
from dtk.driver.remotecache import RegistryCache
from dtk.driver.sources import ContainerfileSource, DkmsGroup
from dtk.engine import buildah, sandbox, skopeo
from dtk.engine.registry import RegistryError
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.progress import Monitor


class Toolkit(Protocol):
    """What dtk.toolkit.images.ensure_toolkit returns, as far as builds care."""

    @property
    def name(self) -> str: ...

    @property
    def image_id(self) -> str: ...

    @property
    def kernels(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class RunOptions:
    jobs: int
    log_dir: Path
    tls_verify: bool | None = None
    authfile: Path | None = None  # registry credentials for pulls and pushes
    progress: Callable[[str], None] | None = None  # run_matrix sets it: the monitor's step
    cache: RegistryCache | None = None  # the registry every machine shares (--cache)
    roots: sandbox.Roots | None = None  # run_matrix sets it: toolkits mounted for DKMS cells
    # What a cell needs made just before it compiles (a toolkit-plus-dependencies
    # layer): the cell as it then is.
    prepare: Callable[[Cell], Cell] | None = None


def toolkit_target(release: str, known: Callable[[str], str | None]) -> str:
    """The kernel whose toolkit builds for `release`: an RT kernel whose standard
    sibling the archive has shares that sibling's toolkit, so one image serves both."""
    sibling = kern.standard_sibling(release)
    return sibling if sibling and known(sibling) is None else release


def resolve_toolkits(kernels: Sequence[str], known: Callable[[str], str | None],
                     ensure: Callable[[str], Toolkit]) -> dict[str, ImageRef | str]:
    """Each kernel's toolkit, or why there is none. `known` returns an error for a
    kernel the archive does not have. An RT kernel whose standard sibling exists
    shares that sibling's toolkit, so one image serves both."""
    result: dict[str, ImageRef | str] = {}
    for release in kernels:
        if release in result:
            continue
        problem = known(release)
        if problem:
            result[release] = problem
            continue
        try:
            toolkit = ensure(toolkit_target(release, known))
        except DtkError as exc:
            result[release] = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            continue
        ref = ImageRef(toolkit.name, toolkit.image_id)
        for covered in toolkit.kernels:
            if covered in kernels:
                result[covered] = ref
        result.setdefault(release, f"toolkit {toolkit.name} does not contain {release}")
    return result


def run_matrix(matrix: Matrix, options: RunOptions, monitor: Monitor) -> list[Outcome]:
    """Build every cell, up to `jobs` at once; outcomes in the plan's order.

    First every cell that compiles nothing is settled (cache hits, remembered DKMS
    failures, errors known before any work), so that the cells left to compile are
    known: they run costliest first (the last cells running are short ones, not one
    long build on one core while the others idle), and share the cores (`make_jobs`)."""
    options.log_dir.mkdir(parents=True, exist_ok=True)
    options = replace(options, progress=options.progress or monitor.step)
    lock = threading.Lock()
    total = len(matrix.cells)
    done = [0]

    def report(cell: Cell, outcome: Outcome) -> Outcome:
        with lock:
            done[0] += 1
            monitor.step(f"[{done[0]}/{total}] {cell.key}: {describe(outcome)}")
            monitor.event("cell", **outcome.to_json())
        return outcome

    def settle(cell: Cell) -> Outcome | None:
        outcome = settle_cell(cell, options)
        return report(cell, outcome) if outcome else None

    def build(cell: Cell) -> Outcome:
        with lock:
            monitor.step(f"{cell.key}: started")
            jobs = make_jobs(os.cpu_count() or 1, options.jobs, left[0])

        def on_line(line: str) -> None:
            with lock:
                monitor.detail(f"{cell.key}: {line}")

        outcome = build_cell(cell, options, on_line, make_jobs=jobs)
        with lock:
            left[0] -= 1
        return report(cell, outcome)

    with sandbox.image_roots() as roots, \
            ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        options = replace(options, roots=roots)
        try:
            settled = list(pool.map(settle, matrix.cells))
            sizes = functools.cache(source_bytes)  # a package's tree serves every kernel
            todo = sorted((i for i, o in enumerate(settled) if o is None),
                          key=lambda i: -estimated_cost(matrix.cells[i], sizes))
            left = [len(todo)]
            built = dict(zip(todo, pool.map(build, (matrix.cells[i] for i in todo)),
                             strict=True))
        except BaseException:
            # Ctrl-C or SIGTERM reaches this thread only; the builds run in their own
            # process groups and would go on for up to an hour. Kill them, start no
            # other, and let each worker remove its container before the pool closes.
            runner.stop_all()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    outcomes = [o if o is not None else built[i] for i, o in enumerate(settled)]
    write_atomic(options.log_dir / "results.json",
                 json.dumps([o.to_json() for o in outcomes], indent=2).encode())
    return outcomes


def make_jobs(cores: int, workers: int, unfinished: int) -> int:
    """make's -j for a DKMS cell: the cores shared among the cells that may run
    beside it. Cells already fill the cores while many remain, and one make per
    core spent less CPU than two per core on the benchmark's cells (in 5 of 7
    paired runs, by 12-17%; these machines are noisy); the last cells get the
    cores the finished ones left."""
    return max(1, cores // max(1, min(workers, unfinished)))


def estimated_cost(cell: Cell, sizes: Callable[[Path], int] | None = None) -> int:
    """How long a cell may take, for ordering only: the bytes of its DKMS sources
    (`sizes`: `source_bytes`, perhaps remembered). A Containerfile's build cannot be
    guessed; it goes first."""
    source = cell.source
    if not isinstance(source, DkmsGroup):
        return 1 << 62
    return sum((sizes or source_bytes)(p.tree) for p in source.packages)


def source_bytes(root: Path) -> int:
    """Bytes of the files under `root` (a link counts as itself, not its target)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += (Path(dirpath) / name).lstat().st_size
            except OSError:
                continue
    return total


def describe(outcome: Outcome) -> str:
    """A cell's progress line: what became of it, and from where when not made now."""
    if outcome.status is Status.BUILT:
        how = (("taken from the registry cache" if outcome.shared
                else "cache hit in local storage") if outcome.cached
               else f"built in {outcome.seconds:.1f}s")
        return how + (f", pushed {outcome.pushed[:19]}" if outcome.pushed else "")
    return f"{outcome.state}: {outcome.reason.splitlines()[0] if outcome.reason else ''}"


def _log_path(options: RunOptions, cell: Cell) -> Path:
    return options.log_dir / (re.sub(r"[^A-Za-z0-9._@-]+", "_", cell.key) + ".log")


def settle_cell(cell: Cell, options: RunOptions) -> Outcome | None:
    """The outcome of a cell that compiles nothing — an error known before any work,
    a cache hit, a remembered DKMS failure — pushed if asked; None if it must be built
    (`build_cell`). Never raises."""
    log_file = _log_path(options, cell)
    log_file.write_text(f"# dtk build {cell.key} -> {cell.image}\n# inputs {cell.input_hash}\n")
    if cell.error:
        with log_file.open("a") as sink:
            sink.write(f"# FAILED before any work: {cell.error}\n")
        return replace(_failed(cell, options), reason=cell.error)
    if cell.force:
        forget(cell)  # what the build now says replaces it, or nothing if it cannot say
        return None

    def lookup(base: Outcome) -> Outcome | None:
        known = _cached(cell, base) or remembered(cell)
        if options.cache:
            known = _shared(cell, base, known, options.cache, log_file)
        return _push(cell, known, options) if known and known.status is Status.BUILT \
            and cell.push and not known.pushed else known
    return _guarded(cell, options, lookup)


def build_cell(cell: Cell, options: RunOptions, on_line: Callable[[str], None] | None = None,
               *, make_jobs: int = 1) -> Outcome:
    """Compile a cell `settle_cell` left, and push it if asked. Never raises."""
    def compile_and_push(base: Outcome) -> Outcome:
        ready = options.prepare(cell) if options.prepare else cell
        outcome = _build(ready, base, _log_path(options, cell), on_line, options,
                         make_jobs=make_jobs)
        return _push(cell, outcome, options) if outcome.status is Status.BUILT and cell.push \
            else outcome
    outcome = _guarded(cell, options, compile_and_push)
    assert outcome is not None
    if options.cache:
        options.cache.publish(cell, outcome, remembered(cell))
    return outcome


def _shared(cell: Cell, base: Outcome, known: Outcome | None, cache: RegistryCache,
            log_file: Path) -> Outcome | None:
    """What this machine knows, stored in the shared cache too; or what the cache
    knows, a failure remembered here as well."""
    if known is not None:
        cache.publish(cell, known, remembered(cell))
        return known
    fetched = cache.fetch(cell, base)
    if fetched is not None and fetched.status is not Status.BUILT:
        remember(cell, fetched, log_file)
    return fetched


def _failed(cell: Cell, options: RunOptions) -> Outcome:
    return Outcome(cell.module, cell.kernel, Status.FAILED, cell.image,
                   log=str(_log_path(options, cell)))


def _guarded(cell: Cell, options: RunOptions,
             work: Callable[[Outcome], Outcome | None]) -> Outcome | None:
    """`work`'s outcome, or a failed one saying why it raised (a bug in one cell must
    not take the others down); timed, and a failure noted in the cell's log."""
    start = time.monotonic()
    base = _failed(cell, options)
    log_file = _log_path(options, cell)
    outcome: Outcome | None
    try:
        outcome = work(base)
    except CellFailedError as exc:
        outcome = replace(base, reason=exc.message, tail=tail_of(exc.output))
        fault = machine_fault(exc.message + "\n" + log_file.read_text(errors="replace"))
        if fault:  # the same inputs may well build on a machine with room for them
            outcome = replace(outcome, retry=True,
                              reason=f"{exc.message}: '{fault}' is this machine's "
                                     "failure, not the package's (not remembered)")
        else:
            remember(cell, outcome, log_file)
    except runner.CommandError as exc:  # a tool failed, not the package's build
        outcome = replace(base, reason=exc.message.splitlines()[0], tail=tail_of(exc.tail),
                          retry=True)
    except RegistryError as exc:  # pulling a FROM image, say
        outcome = replace(base, reason=exc.render().removeprefix("error: "), retry=True)
    except DtkError as exc:  # what the image is (no modules, no index): its inputs' fault
        outcome = replace(base, reason=exc.render().removeprefix("error: "))
    except Exception as exc:
        with log_file.open("a") as sink:
            sink.write(traceback.format_exc())
        outcome = replace(base, reason=f"internal error: {exc!r} (traceback in the log)",
                          retry=True)
    if outcome is None:
        return None
    if outcome.status is Status.FAILED and not outcome.cached:
        with log_file.open("a") as sink:
            sink.write(f"\n# FAILED: {outcome.reason}\n")
    return replace(outcome, seconds=time.monotonic() - start)


def _outcome_path(cell: Cell) -> Path:
    return paths.cache_dir() / "build" / "outcomes" / cell.input_hash.removeprefix("sha256:")


def remember(cell: Cell, outcome: Outcome, log_file: Path) -> None:
    """Keep a DKMS cell's failure or exclusion under its input hash: dkms's verdict on
    the same sources, toolkit and recipe is the same (the build is offline), so the
    next run says it again in no time instead of compiling for minutes (openafs on
    6.12 fails after six). Containerfile builds may fetch from the network: their
    failures are never remembered. `--rebuild` forgets."""
    if not isinstance(cell.source, DkmsGroup):
        return
    entry = _outcome_path(cell)
    data = {"status": outcome.status.value, "reason": outcome.reason,
            "tail": list(outcome.tail), "notes": list(outcome.notes)}
    write_atomic(entry.with_suffix(".log"), log_file.read_bytes())
    write_atomic(entry.with_suffix(".json"), json.dumps(data).encode())


def forget(cell: Cell) -> None:
    entry = _outcome_path(cell)
    for suffix in (".json", ".log"):
        entry.with_suffix(suffix).unlink(missing_ok=True)


def remembered(cell: Cell) -> Outcome | None:
    """The failure or exclusion `remember` kept for exactly these inputs, if any."""
    entry = _outcome_path(cell)
    if not isinstance(cell.source, DkmsGroup):
        return None
    try:
        data = json.loads(entry.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return Outcome(cell.module, cell.kernel, Status(data["status"]), cell.image,
                   cached=True, reason=data["reason"], tail=tuple(data["tail"]),
                   notes=tuple(data["notes"]), log=str(entry.with_suffix(".log")))


def _cached(cell: Cell, base: Outcome) -> Outcome | None:
    if not buildah.image_exists(cell.image):
        return None
    labels = buildah.labels(cell.image)
    if labels.get(HASH_LABEL) != cell.input_hash:
        return None
    modules = tuple(m for m in labels.get("dtk.build.modules", "").split(",") if m)
    return replace(base, status=Status.BUILT, image_id=buildah.image_id(cell.image),
                   cached=True, modules=modules)


def _build(cell: Cell, base: Outcome, log_file: Path, on_line: Callable[[str], None] | None,
           options: RunOptions, *, make_jobs: int = 1) -> Outcome:
    source = cell.source
    if isinstance(source, DkmsGroup):
        assert options.roots is not None  # run_matrix's
        result = dkms.build_cell(cell, source, log_file, on_line, make_jobs=make_jobs,
                                 roots=options.roots)
        notes = source.notes
    else:
        assert isinstance(source, ContainerfileSource)
        result = containerfile.build_cell(cell, source, log_file, on_line, options.authfile)
        notes = ()
    if isinstance(result, dkms.Excluded):
        excluded = replace(base, status=Status.EXCLUDED, reason=result.reason)
        remember(cell, excluded, log_file)
        return excluded
    return replace(base, status=Status.BUILT, image_id=result.image_id,
                   modules=result.modules, notes=(*notes, *result.notes))


def _push(cell: Cell, outcome: Outcome, options: RunOptions) -> Outcome:
    """Push with retries; an image is reported pushed only with the registry's digest."""
    def retrying(text: str) -> None:
        if options.progress is not None:
            options.progress(f"{cell.key}: {text}")
    try:
        digest = skopeo.push(cell.image, cell.image, tls_verify=options.tls_verify,
                             authfile=options.authfile, on_retry=retrying)
    except DtkError as exc:
        # The push failed, not the cell: not a result any cache holds, and another run
        # may push it (a cache hit's failure to push is no cached failure either).
        lines = exc.message.splitlines()
        made = "cache hit" if outcome.cached else "built"
        return replace(outcome, status=Status.FAILED, reason=f"{made}, but {lines[0]}",
                       cached=False, shared=False, retry=True,
                       tail=tuple(x for x in (*lines[1:], f"hint: {exc.hint}" if exc.hint
                                              else "") if x))
    return replace(outcome, pushed=digest)


def failed(outcomes: Iterable[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status is Status.FAILED]
