"""`dtk vmtest`: boot each kernel, load the driver image's module the way KMM's
worker does, and report a verdict per kernel.

Flow: read the image once (unmounted before anything boots) → the guest
userland (cached) → per kernel, in parallel up to the number of cores: the
kernel's cached parts, the in-tree modules the driver needs, one initramfs,
one boot with a hard timeout → verdict.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from dtk import kernel as kern
from dtk import paths
from dtk import run as runner
from dtk.distro.debian import DebianArchive
from dtk.distro.select import open_archive
from dtk.errors import DtkError
from dtk.kernel.verdict import Verdict
from dtk.progress import Monitor, NullMonitor
from dtk.vm import cpio, guest, kernels, qemu, secureboot, tools
from dtk.vm.driver import DriverTree, ImageContents, read_driver_tree
from dtk.vm.guest import GuestConfig
from dtk.vm.secureboot import SecureBootSpec
from dtk.vm.verdict import decide


@dataclass(frozen=True)
class VmTestSpec:
    """One `dtk vmtest` run. `image` may hold KMM variables (${KERNEL_FULL_VERSION})."""

    image: str
    kernels: tuple[str, ...]
    guest: GuestConfig  # module "" = the image's only module
    built_for: str = ""  # load modules built for this kernel on every kernel booted
    firmware_path: str = ""  # firmwarePath inside the image
    preload_in_tree: bool = False
    memory_mb: int = 512
    cpus: int = 1
    append: str = ""
    sig_enforce: bool = False
    timeout_s: float = 60.0
    keep_log: bool = False
    accel: str = "auto"
    # Boot through OVMF, shim and GRUB with Secure Boot on, the certificates enrolled as
    # MOKs (dtk.vm.secureboot); None: qemu enters the kernel directly (PVH).
    secure_boot: SecureBootSpec | None = None


@dataclass
class VmResult:
    kernel: str
    image: str
    verdict: Verdict
    reason: str
    seconds: float = 0.0  # qemu start to qemu exit
    guest_boot_s: float = 0.0  # guest uptime when dtk's init started
    accel: str = ""
    kernel_origin: str = ""
    module: str = ""
    log: str = ""
    sections: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    boot: dict[str, str] = field(default_factory=dict)  # a Secure Boot boot: what it was

    def to_json(self) -> dict[str, Any]:
        return {
            "kernel": self.kernel, "image": self.image, "verdict": self.verdict.value,
            "boot": self.boot or {"chain": "qemu -kernel (PVH, no firmware)"},
            "reason": self.reason, "seconds": round(self.seconds, 2),
            "guest_boot_s": round(self.guest_boot_s, 2), "accel": self.accel,
            "kernel_origin": self.kernel_origin, "module": self.module, "log": self.log,
            "notes": self.notes, "check_output": self.sections.get("check", ""),
            "load_output": self.sections.get("load", ""),
            "unload_output": self.sections.get("unload", ""),
            "kernel_log": self.sections.get("dmesg", ""),
        }


def step_timeout(vm_timeout_s: float) -> int:
    """How long the guest waits for one step before reporting it as hung: well
    inside the VM's hard timeout, so a hang ends with a stack, not a kill."""
    return max(3, int(vm_timeout_s * 0.6) - 5)


def image_for(template: str, release: str) -> str:
    if "${" not in template:
        return template
    variables = kern.kmm_variables(release)
    return kern.substitute(template, variables)


@dataclass(frozen=True)
class _Run:
    """What every kernel's job of one run shares."""

    spec: VmTestSpec
    userland: Path
    probe_initrd: Path
    work: Path
    archive: Callable[[], DebianArchive]
    secure: secureboot.Prepared | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)


def vmtest(spec: VmTestSpec, monitor: Monitor | None = None) -> list[VmResult]:
    """Run the VM test on every kernel of `spec`; one result per kernel."""
    monitor = monitor or NullMonitor()
    if not spec.kernels:
        raise DtkError("no kernel to boot", hint="pass --kernel K (repeatable)")
    for release in spec.kernels:
        kern.parse(release)
    runner.run([qemu.QEMU, "--version"], timeout=30)  # fail early if qemu is missing
    archive = cache(open_archive)
    for release in spec.kernels:  # an unknown kernel is an input error, before any boot
        kernels.find_source(release, archive)
    contents = _read_images(spec, monitor)
    _check_inputs(spec, contents)
    monitor.step("preparing the guest userland (busybox-static, kmod)")
    userland = tools.ensure_tools(archive())
    secure = None
    if spec.secure_boot is not None:
        monitor.step("preparing the Secure Boot firmware, shim, GRUB and the variable store "
                     f"(MOK enrolment: {spec.secure_boot.enrolment.value})")
        secure = secureboot.prepare(spec.secure_boot, archive,
                                    kernels.find_source(spec.kernels[0], archive))
    with tempfile.TemporaryDirectory(prefix="dtk-vmtest-") as tmp:
        work = Path(tmp)
        probe_initrd = _probe_initrd(userland, work)
        run = _Run(spec, userland, probe_initrd, work, archive, secure)
        return _run_parallel(run, {r: contents.get(r) for r in spec.kernels}, monitor)


def _read_images(spec: VmTestSpec, monitor: Monitor) -> dict[str, ImageContents | str]:
    """Per kernel: the image contents to load, or why there is nothing to load."""
    by_image: dict[str, list[str]] = {}
    for release in spec.kernels:
        image = image_for(spec.image, spec.built_for or release)
        by_image.setdefault(image, []).append(release)
    out: dict[str, ImageContents | str] = {}
    for image, releases in by_image.items():
        source = [spec.built_for] if spec.built_for else releases
        monitor.step(f"reading {image}")
        try:
            contents = read_driver_tree(image, tuple(source), spec.guest.dir_name,
                                  spec.firmware_path)
        except DtkError as exc:  # one missing image must not hide the other kernels
            out.update(dict.fromkeys(releases, exc.message))
            continue
        for release in releases:
            if spec.built_for:
                out[release] = _retarget(contents, spec.built_for, release)
            else:
                out[release] = contents
    return out


def _check_inputs(spec: VmTestSpec, contents: dict[str, ImageContents | str]) -> None:
    """Everything a user can get wrong about the image, said before anything boots:
    an image that does not exist, no modules for a kernel, a module it does not have."""
    problems: list[str] = []
    for release, found in contents.items():
        if isinstance(found, str):
            problems.append(f"{release}: {found}")
            continue
        tree = found.trees.get(release)
        if tree is None:
            problems.append(f"{release}: {found.missing.get(release, 'no modules')}")
            continue
        wanted = spec.guest.module or (spec.guest.loading_order or ("",))[0]
        if wanted and wanted.replace("-", "_") not in tree.modules:
            problems.append(f"{release}: the image has no module {wanted} (it has "
                            f"{', '.join(sorted(tree.modules))})")
        elif not wanted:
            _only_module(tree)
    if problems:
        raise DtkError("nothing to load:\n  " + "\n  ".join(dict.fromkeys(problems)),
                       hint="check the image name and --module (KMM's moduleName); "
                            "'dtk inspect IMAGE' lists what an image holds")


def _retarget(contents: ImageContents, built_for: str, release: str) -> ImageContents:
    """Modules built for `built_for`, placed where modprobe looks on `release`:
    a node upgraded to `release` that still runs the old driver image."""
    tree = contents.trees.get(built_for)
    if tree is None:
        return contents if release == built_for else ImageContents(
            {}, {release: contents.missing.get(built_for, "no modules")}, contents.firmware)
    old, new = f"/lib/modules/{built_for}", f"/lib/modules/{release}"
    moved = DriverTree(release, [replace(e, path=e.path.replace(old, new, 1))
                                 for e in tree.entries],
                       {n: p.replace(old, new, 1) for n, p in tree.modules.items()},
                       set(tree.needs), set(tree.requests))
    return ImageContents({release: moved}, {}, contents.firmware)


def _probe_initrd(userland: Path, work: Path) -> Path:
    """Userland and init without a configuration: the guest reports at once."""
    buf = io.BytesIO()
    cpio.write(buf, [cpio.file("/init", guest.init_script().encode(), 0o755)])
    path = work / "probe.cpio"
    path.write_bytes(userland.read_bytes() + buf.getvalue())
    return path


Job = Callable[[_Run, str, "ImageContents | str | None"], "VmResult"]


def _run_parallel(run: _Run, jobs: dict[str, ImageContents | str | None],
                  monitor: Monitor, job: Job | None = None) -> list[VmResult]:
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    monitor.step(f"booting {len(jobs)} kernel(s), {workers} at a time")
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dtk-vm") as pool:
        futures: dict[str, Future[VmResult]] = {
            release: pool.submit(_guarded, job or _one_kernel, run, release, contents)
            for release, contents in jobs.items()}
        try:
            for release, future in futures.items():
                result = future.result()
                monitor.step(f"{release}: {result.verdict.value}"
                             + (f" ({result.reason})" if result.reason else "")
                             + f" in {result.seconds:.1f}s")
                monitor.event("vmtest", **result.to_json())
        except BaseException:
            _cancel_all(run, list(futures.values()))
            raise
    return [futures[release].result() for release in jobs]


def _guarded(job: Job, run: _Run, release: str,
             contents: ImageContents | str | None) -> VmResult:
    """One kernel's job, whose unexpected exception becomes that kernel's verdict:
    a bug met on one kernel must not take the other kernels' verdicts with it
    (future.result() would re-raise it and cancel every VM of the run)."""
    try:
        return job(run, release, contents)
    except Exception as exc:  # reported as this kernel's verdict, never re-raised
        frame = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" at {Path(frame[0].filename).name}:{frame[0].lineno}" if frame else ""
        return VmResult(release, run.spec.image, Verdict.NOT_RUN,
                        f"dtk bug: {type(exc).__name__}: {exc}{where}",
                        notes=["please report this with the command line to dtk"])


def _cancel_all(run: _Run, futures: list[Future[VmResult]]) -> None:
    """Ctrl-C: stop every qemu now, including one a worker is about to start."""
    run.cancelled.set()
    for future in futures:
        future.cancel()
    while not all(f.done() for f in futures):
        runner.terminate_all()
        time.sleep(0.1)


def _one_kernel(run: _Run, release: str, contents: ImageContents | str | None) -> VmResult:
    spec, archive = run.spec, run.archive
    image = image_for(spec.image, spec.built_for or release)
    result = VmResult(release, image, Verdict.NOT_RUN, "")
    if not isinstance(contents, ImageContents) or release not in contents.trees:
        result.reason = contents.missing.get(release, "") if isinstance(contents, ImageContents) \
            else str(contents or "no image contents")
        return result
    tree = contents.trees[release]
    try:
        source = kernels.find_source(release, archive)
        with kernels.using_kernel(source, archive) as parts:
            result.kernel_origin = source.origin
            config = _guest_config(spec, tree, parts, result)
            firmware = ["efivarfs"] if run.secure is not None else []  # SecureBoot, read
            modules = kernels.module_set(parts, [*config.preload, *config.in_tree_to_remove,
                                                 *tree.in_tree_needs, *firmware],
                                         sorted(tree.requests), archive)
            initrd = _initrd(run, release, modules, contents, config)
            accel = qemu.choose_accel(spec.accel, parts.boot_image, run.probe_initrd, run.work)
            return _boot(run, parts, initrd, accel, result)
    except DtkError as exc:
        result.reason = exc.message
        return result


def _guest_config(spec: VmTestSpec, tree: DriverTree, parts: kernels.KernelParts,
                  result: VmResult) -> GuestConfig:
    order = spec.guest.loading_order
    module = spec.guest.module or (order[0] if order else _only_module(tree))
    result.module = module
    present = parts.modules_dep.paths.keys()
    remove = tuple(m for m in spec.guest.in_tree_to_remove if m.replace("-", "_") in present)
    needs = tree.in_tree_needs
    unknown = [n for n in needs if n not in present and n not in parts.builtin]
    if unknown:
        result.notes.append(f"depends on {', '.join(unknown)}, which neither the image nor "
                            f"{parts.release} provides")
    preload = tuple(n for n in needs if n in present) if spec.preload_in_tree else ()
    if needs and not spec.preload_in_tree:
        result.notes.append(
            f"needs in-tree {', '.join(needs)}: modprobe -d {spec.guest.dir_name} only finds "
            "them if the image's modules.dep references them (KMM's pattern: "
            f"ln -s /host/lib/modules/{parts.release} {spec.guest.dir_name}/lib/modules/"
            f"{parts.release}/host before depmod), or with --preload-in-tree")
    fw_src = f"/tmp{spec.firmware_path}" if spec.firmware_path else ""
    return replace(spec.guest, module=module, in_tree_to_remove=remove, preload=preload,
                   firmware_src=fw_src, step_timeout_s=step_timeout(spec.timeout_s),
                   keep_log=spec.keep_log)


def _only_module(tree: DriverTree) -> str:
    if len(tree.modules) == 1:
        return next(iter(tree.modules))
    raise DtkError(f"the image has several modules for {tree.release} "
                   f"({', '.join(sorted(tree.modules))}); say which to load",
                   hint="pass --module NAME (KMM's moduleName)")


def _initrd(run: _Run, release: str, modules: Path | None, contents: ImageContents,
            config: GuestConfig) -> Path:
    """tools + in-tree modules + the driver's tree and the worker's config, as one
    file of concatenated archives (the kernel unpacks them in order)."""
    tree = contents.trees[release]
    entries = [cpio.file("/init", guest.init_script().encode(), 0o755),
               cpio.file(guest.CONFIG_PATH, guest.render_config(config).encode()),
               *tree.entries, *contents.firmware]
    if len(config.loading_order) > 1:
        entries.append(cpio.file(guest.SOFTDEP_PATH,
                                 guest.render_softdeps(config.loading_order).encode()))
    return cpio.write_initrd(run.work / release / "initrd.cpio",
                             [run.userland, *([modules] if modules else [])], entries)


def _log_dir(image: str, release: str) -> Path:
    return paths.state_dir() / "vm" / kern.normalize(image.replace("/", "_")) / release


def _boot(run: _Run, parts: kernels.KernelParts, initrd: Path, accel: str,
          result: VmResult) -> VmResult:
    """One VM. Its console and report are private to this run (two dtk runs on
    the same image and kernel must not mix); failures, or --keep-log, copy them
    to the state directory for the user."""
    spec = run.spec
    private = initrd.parent
    console, report_file = private / "console.log", private / "report.txt"
    console.write_text("")
    cmdline = qemu.kernel_cmdline(sig_enforce=spec.sig_enforce, append=spec.append)
    if run.cancelled.is_set():
        raise DtkError("interrupted")
    start = time.monotonic()
    if run.secure is not None:
        end = secureboot.boot_kernel(run.secure, parts, initrd, private, cmdline,
                                     memory_mb=spec.memory_mb, cpus=spec.cpus, accel=accel,
                                     timeout_s=spec.timeout_s, console=console)
    else:
        boot = qemu.BootSpec(parts.boot_image, initrd, report_file, cmdline,
                             memory_mb=spec.memory_mb, accel=accel, cpus=spec.cpus)
        end = qemu.boot(boot, timeout_s=spec.timeout_s, console_log=console)
    result.seconds = time.monotonic() - start
    report = guest.parse_report(report_file.read_text(errors="replace"))
    result.verdict, result.reason = decide(report, end)
    if run.secure is not None:
        result.boot = secureboot.describe(run.secure, report.facts)
        problem = secureboot.secure_boot_problem(report.facts) if report.steps else ""
        if problem:
            result.verdict, result.reason = Verdict.NOT_RUN, problem
    result.accel = accel
    result.sections = report.sections
    result.guest_boot_s = dict(report.steps).get("boot", 0.0)
    if not result.verdict.ok or spec.keep_log:
        logs = _log_dir(result.image, parts.release)
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(console, logs / "console.log")
        shutil.copyfile(report_file, logs / "report.txt")
        result.log = str(logs / "console.log")
    return result
