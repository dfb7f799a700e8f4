"""Many modules, one boot per kernel: the VM side of `dtk prove`.

Each kernel boots once and its guest loads every module of the run one after
another, the way KMM's worker loads one: each module's image tree under its own
directory (`/opt/<name>/lib/modules/K`, so `modprobe -d` finds that image's own
modules.dep), verified live, checked, unloaded. A module that oopses, panics or
hangs ends that boot with its verdict; the modules after it go on in a fresh
boot. Boots run in parallel, one per core, whichever kernel they are for (a
kernel whose modules do not fit one initramfs boots in several parts).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from dtk import kernel as kern
from dtk import paths
from dtk import run as runner
from dtk.distro.select import open_archive
from dtk.errors import DtkError
from dtk.kernel.verdict import Verdict
from dtk.progress import Monitor, NullMonitor
from dtk.vm import cpio, guest, kernels, qemu, secureboot, tools
from dtk.vm.driver import DriverTree, read_driver_tree
from dtk.vm.guest import GuestConfig, Unit
from dtk.vm.secureboot import SecureBootSpec
from dtk.vm.verdict import decide
from dtk.vm.vmtest import step_timeout


@dataclass(frozen=True)
class BatchModule:
    """One module to load on one kernel. `name` is unique within the kernel's
    batch and one word (it names the module's directory in the guest)."""

    name: str
    image: str  # the image for this kernel (no variables left)
    module: str  # moduleName, as the image holds it
    built_for: str = ""  # the image's modules are for this kernel: load them anyway
    check: str = ""
    parameters: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchSpec:
    batches: dict[str, tuple[BatchModule, ...]]  # kernel → modules, in load order
    timeout_s: float = 60.0  # the boot's allowance; each module adds its own steps
    memory_mb: int = 1024
    accel: str = "auto"
    secure_boot: SecureBootSpec | None = None  # through OVMF, shim and GRUB (vmtest's too)


@dataclass
class ModuleResult:
    name: str
    kernel: str
    module: str
    verdict: Verdict
    reason: str
    boot: int = 0  # which of the kernel's boots loaded it (1-based; 0: none)
    seconds: float = 0.0  # from the module's load step to its done
    sections: dict[str, str] = field(default_factory=dict)
    log: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kernel": self.kernel, "module": self.module,
                "verdict": self.verdict.value, "reason": self.reason, "boot": self.boot,
                "seconds": round(self.seconds, 2), "log": self.log,
                "load_output": self.sections.get("load", ""),
                "check_output": self.sections.get("check", ""),
                "kernel_log": self.sections.get("dmesg", "")}


@dataclass
class KernelRun:
    kernel: str
    modules: list[ModuleResult]
    boots: int = 0
    seconds: float = 0.0
    accel: str = ""
    boot: dict[str, str] = field(default_factory=dict)  # a Secure Boot boot: what it was


@dataclass(frozen=True)
class _Shared:
    spec: BatchSpec
    userland: Path
    probe_initrd: Path
    work: Path
    trees: dict[tuple[str, str], DriverTree | str]  # (kernel, module name) → tree or why not
    secure: secureboot.Prepared | None = None
    # One boot per core, whichever kernel or initramfs-sized chunk it is for.
    slots: threading.Semaphore = field(
        default_factory=lambda: threading.Semaphore(os.cpu_count() or 1))
    lock: threading.Lock = field(default_factory=threading.Lock)


def run_batches(spec: BatchSpec, monitor: Monitor | None = None) -> list[KernelRun]:
    """Every kernel's batch, kernels in parallel; results in `spec`'s order."""
    monitor = monitor or NullMonitor()
    runner.run([qemu.QEMU, "--version"], timeout=30)
    archive = cache(open_archive)
    trees = _read_trees(spec, monitor)
    monitor.step("preparing the guest userland (busybox-static, kmod)")
    userland = tools.ensure_tools(archive())
    with tempfile.TemporaryDirectory(prefix="dtk-prove-") as tmp:
        work = Path(tmp)
        probe = work / "probe.cpio"
        buf = io.BytesIO()
        cpio.write(buf, [cpio.file("/init", guest.init_script().encode(), 0o755)])
        probe.write_bytes(userland.read_bytes() + buf.getvalue())
        secure = None
        if spec.secure_boot is not None and spec.batches:
            monitor.step("preparing the Secure Boot firmware, shim, GRUB and the variable "
                         f"store (MOK enrolment: {spec.secure_boot.enrolment.value})")
            secure = secureboot.prepare(spec.secure_boot, archive, kernels.find_source(
                next(iter(spec.batches)), archive))
        shared = _Shared(spec, userland, probe, work, trees, secure)
        monitor.step(f"booting {len(spec.batches)} kernel(s), {os.cpu_count() or 1} boots "
                     "at a time")
        # Every kernel is prepared at once; their boots share the cores (`slots`).
        with ThreadPoolExecutor(max_workers=max(1, len(spec.batches)),
                                thread_name_prefix="dtk-prove") as pool:
            futures = {k: pool.submit(_kernel_job, shared, k, archive, monitor)
                       for k in spec.batches}
            try:
                return [futures[k].result() for k in spec.batches]
            except BaseException:
                for future in futures.values():
                    future.cancel()
                while not all(f.done() for f in futures.values()):
                    runner.terminate_all()
                    time.sleep(0.1)
                raise


def _read_trees(spec: BatchSpec, monitor: Monitor) -> dict[tuple[str, str], DriverTree | str]:
    """Each module's tree for its kernel, read before anything boots (an image is
    mounted once per kernel it serves)."""
    wanted = list(dict.fromkeys((item.image, item.built_for or release)
                                for release, modules in spec.batches.items()
                                for item in modules))
    monitor.step(f"reading {len(wanted)} image(s)")
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # mostly buildah
        read = dict(zip(wanted, pool.map(lambda w: _read_one(*w), wanted), strict=True))
    out: dict[tuple[str, str], DriverTree | str] = {}
    for release, modules in spec.batches.items():
        for item in modules:
            source = item.built_for or release
            tree = read[item.image, source]
            if isinstance(tree, DriverTree) and item.module.replace("-", "_") not in tree.modules:
                tree = f"{item.image} has no module {item.module} for {source}"
            out[release, item.name] = tree if isinstance(tree, str) else \
                _placed(tree, source, release, f"/opt/{item.name}")
    return out


def _read_one(image: str, release: str) -> DriverTree | str:
    try:
        contents = read_driver_tree(image, (release,), "/opt")
    except DtkError as exc:
        return exc.message
    return contents.trees.get(release) or contents.missing.get(release, "no modules")


def _placed(tree: DriverTree, built_for: str, release: str, dir_name: str) -> DriverTree:
    """`tree` (read from the image's /opt) under `dir_name`, its kernel directory
    renamed to `release` when its modules were built for another kernel."""
    old, new = f"/opt/lib/modules/{built_for}", f"{dir_name}/lib/modules/{release}"

    def move(path: str) -> str:
        return path.replace(old, new, 1) if path.startswith(old) else \
            path.replace("/opt", dir_name, 1)
    return DriverTree(release, [replace(e, path=move(e.path)) for e in tree.entries],
                      {n: move(p) for n, p in tree.modules.items()},
                      set(tree.needs), set(tree.requests))


def _kernel_job(shared: _Shared, release: str, archive: kernels.ArchiveOpener,
                monitor: Monitor) -> KernelRun:
    run = KernelRun(release, [])
    pending = list(shared.spec.batches[release])
    for item in list(pending):
        problem = shared.trees[release, item.name]
        if isinstance(problem, str):
            run.modules.append(ModuleResult(item.name, release, item.module, Verdict.NOT_RUN,
                                            problem))
            pending.remove(item)
    start = time.monotonic()
    try:
        if pending:
            _boot_all(shared, run, pending, archive, monitor)
    except DtkError as exc:
        done = {r.name for r in run.modules}
        run.modules += [ModuleResult(i.name, release, i.module, Verdict.NOT_RUN, exc.message)
                        for i in pending if i.name not in done]
    run.seconds = time.monotonic() - start
    order = [i.name for i in shared.spec.batches[release]]
    run.modules.sort(key=lambda r: order.index(r.name))
    return run


def _boot_all(shared: _Shared, run: KernelRun, pending: list[BatchModule],
              archive: kernels.ArchiveOpener, monitor: Monitor) -> None:
    source = kernels.find_source(run.kernel, archive)
    with kernels.using_kernel(source, archive) as parts:
        trees = [shared.trees[run.kernel, i.name] for i in pending]
        needs = sorted({n for t in trees if isinstance(t, DriverTree) for n in t.in_tree_needs}
                       | ({"efivarfs"} if shared.secure is not None else set()))
        requests = sorted({r for t in trees if isinstance(t, DriverTree) for r in t.requests})
        modules = kernels.module_set(parts, needs, requests, archive)
        run.accel = qemu.choose_accel(shared.spec.accel, parts.boot_image,
                                      shared.probe_initrd, shared.work)
        fixed = shared.userland.stat().st_size + (modules.stat().st_size if modules else 0)
        budget = initrd_budget(shared.spec.memory_mb) - fixed
        chunks = size_chunks(pending, [_tree_bytes(t) for t in trees], budget)
        with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
            list(pool.map(lambda c: _boot_chunk(shared, parts, modules, c, run=run,
                                                monitor=monitor), chunks))


def _boot_chunk(shared: _Shared, parts: kernels.KernelParts, modules: Path | None,
                chunk: list[BatchModule], *, run: KernelRun, monitor: Monitor) -> None:
    left = chunk
    while left:  # a crash or hang ends a boot: the rest go on in a fresh one
        with shared.slots:
            with shared.lock:
                run.boots += 1
                number = run.boots
            results = _boot_once(shared, parts, modules, left, run=run, number=number)
        with shared.lock:
            run.modules += results
            monitor.step(f"{run.kernel}: boot {number}: " + ", ".join(
                f"{r.name} {r.verdict.value}" for r in results))
        left = left[len(results):]


def initrd_budget(memory_mb: int) -> int:
    """Bytes of initramfs a guest of `memory_mb` can take: the archive and its unpacked
    files both sit in RAM while the kernel boots (and qemu refuses an initrd near the
    guest's memory: 'initrd is too large'), so a quarter of it, leaving the rest to
    the kernel and the modules it loads."""
    return memory_mb * (1 << 20) // 4


def size_chunks(items: list[BatchModule], sizes: list[int],
                budget: int) -> list[list[BatchModule]]:
    """`items` in order, cut into runs whose sizes add up to at most `budget` (an item
    larger than the budget alone): each run is one boot's initramfs. Pure."""
    chunks: list[list[BatchModule]] = []
    used = budget + 1
    for item, size in zip(items, sizes, strict=True):
        if used + size > budget:
            chunks.append([])
            used = 0
        chunks[-1].append(item)
        used += size
    return chunks


def _tree_bytes(tree: DriverTree | str) -> int:
    return sum(len(e.data) + 512 for e in tree.entries) if isinstance(tree, DriverTree) else 0


def _boot_once(shared: _Shared, parts: kernels.KernelParts, modules: Path | None,
               pending: list[BatchModule], *, run: KernelRun, number: int
               ) -> list[ModuleResult]:
    """Boot `number` of the kernel, loading `pending` in order; the results of the
    modules it got to (at least one: a boot that reaches none reports its failure
    for all)."""
    spec = shared.spec
    private = shared.work / run.kernel / f"boot-{number}"
    private.mkdir(parents=True, exist_ok=True)
    step_s = step_timeout(spec.timeout_s)
    initrd = _initrd(private, shared, modules, pending, step_s=step_s, release=parts.release)
    console, report_file = private / "console.log", private / "report.txt"
    console.write_text("")
    # Each module may use its steps' time; a hung one ends the boot at its first.
    timeout_s = spec.timeout_s + 5 * len(pending)
    if shared.secure is not None:
        end = secureboot.boot_kernel(shared.secure, parts, initrd, private, qemu.kernel_cmdline(),
                                     memory_mb=spec.memory_mb, cpus=1, accel=run.accel,
                                     timeout_s=timeout_s, console=console)
    else:
        boot = qemu.BootSpec(parts.boot_image, initrd, report_file, qemu.kernel_cmdline(),
                             memory_mb=spec.memory_mb, accel=run.accel)
        end = qemu.boot(boot, timeout_s=timeout_s, console_log=console)
    frames = guest.split_report(report_file.read_text(errors="replace"))
    if shared.secure is not None:
        problem = _secure_boot_checked(shared.secure, frames, run)
        if problem:
            return [ModuleResult(i.name, run.kernel, i.module, Verdict.NOT_RUN, problem, number)
                    for i in pending]
    results = []
    for item, (name, report) in zip(pending, frames.modules, strict=False):
        if name != item.name:
            break
        verdict, reason = decide(report, end)
        up = dict(report.steps)
        results.append(ModuleResult(item.name, run.kernel, item.module, verdict, reason,
                                    number, _module_seconds(report.steps, up),
                                    report.sections))
    if not results:  # the boot never reached the first module: nothing was loaded, so
        # no module earns a verdict of its own; each says why the boot failed
        _verdict, reason = decide(frames.preamble, end)
        results = [ModuleResult(i.name, run.kernel, i.module, Verdict.NOT_RUN,
                                f"the boot failed before any module was loaded: {reason}",
                                number) for i in pending]
    if any(not r.verdict.compatible for r in results):
        _keep_logs(private, results, run, number)
    return results


def _secure_boot_checked(secure: secureboot.Prepared, frames: guest.Frames,
                         run: KernelRun) -> str:
    """What the guest said about Secure Boot, kept for the run; why its verdicts prove
    nothing about Secure Boot, if they do not."""
    facts = frames.preamble.facts
    if not frames.preamble.steps and not frames.modules:
        return ""  # the boot never reached dtk's init: decide() says why
    run.boot = secureboot.describe(secure, facts)
    return secureboot.secure_boot_problem(facts)


def _module_seconds(steps: Sequence[tuple[str, float]], up: dict[str, float]) -> float:
    times = [t for _n, t in steps]
    return max(times) - up.get("load", max(times)) if times else 0.0


def _unit(item: BatchModule, step_s: int) -> Unit:
    return Unit(item.name, GuestConfig(module=item.module, dir_name=f"/opt/{item.name}",
                                       parameters=item.parameters, check=item.check,
                                       step_timeout_s=step_s))


def _initrd(private: Path, shared: _Shared, modules: Path | None,
            pending: list[BatchModule], *, step_s: int, release: str) -> Path:
    units = [_unit(item, step_s) for item in pending]
    entries = [cpio.file("/init", guest.init_script().encode(), 0o755),
               cpio.file(guest.CONFIG_PATH, guest.render_units(units, step_s).encode())]
    for item in pending:
        tree = shared.trees[release, item.name]
        assert isinstance(tree, DriverTree)
        entries += tree.entries
    return cpio.write_initrd(private / "initrd.cpio",
                             [shared.userland, *([modules] if modules else [])], entries)


def _keep_logs(private: Path, results: list[ModuleResult], run: KernelRun, number: int) -> None:
    logs = paths.state_dir() / "prove" / kern.normalize(run.kernel) / f"boot-{number}"
    logs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(private / "console.log", logs / "console.log")
    shutil.copyfile(private / "report.txt", logs / "report.txt")
    for result in results:
        result.log = str(logs / "console.log")
