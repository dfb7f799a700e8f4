"""Running qemu: the command line (pure), the KVM probe, and one boot.

Every boot goes through `dtk.run.stream`, which puts qemu in its own process
group, enforces the hard timeout and kills the group on Ctrl-C; the console
goes to a log file and the guest's report to a second serial port backed by a
file, so no verdict depends on what the console happens to print.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from dtk import run as runner
from dtk.digest import parts_digest
from dtk.files import write_atomic
from dtk.lock import locked
from dtk.vm.cache import vm_cache
from dtk.vm.verdict import VmEnd

QEMU = "qemu-system-x86_64"
ACCELS = ("auto", "tcg", "kvm")
_PROBE_TIMEOUT_S = 8.0
# Warnings and errors reach the console log; loglevel=4 also measured fastest
# (every console byte is an emulated UART write). panic=-1 reboots at once on
# a panic, which -no-reboot turns into qemu exiting. cryptomgr.notests skips
# the boot-time self-tests of the crypto algorithms (about 1 s of 6.12's boot
# under TCG); module signatures are still verified, by the same code.
_BASE_CMDLINE = ("console=ttyS0", "loglevel=4", "panic=-1", "cryptomgr.notests")


@dataclass(frozen=True)
class BootSpec:
    kernel: Path  # ELF vmlinux (PVH) or bzImage
    initrd: Path
    result: Path  # receives the guest's /dev/ttyS1
    cmdline: str
    memory_mb: int = 512
    accel: str = "tcg"
    cpus: int = 1  # one TCG thread per VM: parallel boots use the cores instead


def kernel_cmdline(*, sig_enforce: bool = False, append: str = "") -> str:
    parts = list(_BASE_CMDLINE)
    if sig_enforce:
        parts.append("module.sig_enforce=1")
    if append.strip():
        parts.append(append.strip())
    return " ".join(parts)


def qemu_argv(spec: BootSpec) -> list[str]:
    """The qemu command line for one boot. Pure."""
    return [
        QEMU, "-accel", spec.accel, "-cpu", "max", "-smp", str(spec.cpus),
        "-m", str(spec.memory_mb),
        "-nographic", "-monitor", "none", "-no-reboot", "-net", "none",
        "-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", spec.cmdline,
        "-serial", "stdio", "-serial", f"file:{spec.result}",
    ]


def boot(spec: BootSpec, *, timeout_s: float, console_log: Path) -> VmEnd:
    """Boot once; return how qemu ended. The guest's report is in spec.result."""
    spec.result.write_bytes(b"")
    try:
        result = runner.stream(qemu_argv(spec), check=False, timeout=timeout_s,
                               log_file=console_log)
    except runner.CommandError as exc:
        if exc.returncode is not None:
            raise
        return VmEnd(None, _console_tail(console_log), timeout_s)
    return VmEnd(result.returncode, _console_tail(console_log), timeout_s)


def _console_tail(log: Path, size: int = 64 * 1024) -> str:
    """The end of the console log: a panic's first line (its reason) comes before
    the whole stack dump, far more than the few lines a command error keeps."""
    with log.open("rb") as f:
        f.seek(max(0, log.stat().st_size - size))
        return f.read().decode(errors="replace")


def _probe_cache_key() -> str:
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = "unknown"
    qemu = shutil.which(QEMU) or QEMU
    try:
        stamp = str(Path(qemu).stat().st_mtime_ns)
    except OSError:
        stamp = "?"
    return parts_digest(boot_id, qemu, stamp)


def choose_accel(requested: str, kernel: Path, initrd: Path, workdir: Path) -> str:
    """'kvm' only if a real boot under KVM reports back in time, else 'tcg'.

    /dev/kvm existing proves little: on these hosts KVM boots hang with every
    CPU model. The probe's answer is cached per host boot (and qemu binary),
    so the cost of a hanging probe is paid once.
    """
    requested = os.environ.get("DTK_VM_ACCEL", requested)
    if requested in ("tcg", "kvm"):
        return requested
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    cached = vm_cache() / "accel" / _probe_cache_key()
    with locked(cached.with_suffix(".lock")):
        if cached.exists():
            return cached.read_text().strip()
        accel = "kvm" if _kvm_boots(kernel, initrd, workdir) else "tcg"
        write_atomic(cached, (accel + "\n").encode())
    return accel


def _kvm_boots(kernel: Path, initrd: Path, workdir: Path) -> bool:
    spec = BootSpec(kernel, initrd, workdir / "kvm-probe.result", kernel_cmdline(),
                    accel="kvm")
    end = boot(spec, timeout_s=_PROBE_TIMEOUT_S, console_log=workdir / "kvm-probe.log")
    return end.returncode == 0 and "@@dtk exit" in spec.result.read_text(errors="replace")
