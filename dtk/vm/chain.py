"""One boot through the real Secure Boot chain: OVMF → shim → GRUB → the signed kernel.

    qemu -machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on
         -drive if=pflash,unit=0,readonly=on,file=OVMF_CODE_4M.secboot.fd
         -drive if=pflash,unit=1,file=<this boot's copy of a variable store>
         -drive <ESP, read-only> -drive <payload, read-only>

OVMF's Secure Boot build needs SMM (q35, smm=on): without it the firmware hangs without
printing a byte. Secure Boot itself is on because the variable store enrols a Platform
Key; the `secure` flash property is what libvirt sets too (the guest cannot write the
firmware's flash behind its back).

The console is watched as it prints (dtk.run.Console), because what fails before the
kernel runs never reaches dtk's report channel: a firmware that prints nothing, GRUB
refusing an unsigned kernel ("bad shim signature") and waiting at a prompt, shim without
GRUB. Each ends the boot at once with its reason; anything that stalls otherwise meets
the hard timeout, whose reason names the last stage the console showed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dtk import run as runner
from dtk.vm.qemu import QEMU
from dtk.vm.verdict import VmEnd

_ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>cDEHM78]")
_POLL_S = 0.1
_TAIL_BYTES = 64 * 1024

# The stages a console shows, in boot order: (what it prints first, the stage's name).
STAGES = (
    (b"BdsDxe", "the firmware (OVMF)"),
    (b"Welcome to GRUB", "GRUB"),
    (b"EFI stub: ", "the kernel (its EFI stub)"),
)
# Console text that means the chain cannot go on: stop now, with this reason.
_FATAL = (
    (b"bad shim signature",
     "GRUB refused the kernel: it is not signed for shim (bad shim signature) - an "
     "-unsigned kernel package or a self-built kernel; Secure Boot boots need the "
     "distribution's signed linux-image package"),
    (b"you need to load the kernel first",
     "GRUB could not load the kernel (you need to load the kernel first)"),
    (b"dtk: no payload disk",
     "GRUB found no payload disk with /dtk/boot.cfg (dtk's second disk)"),
    (b"Security Violation",
     "the firmware or shim refused an image it had to verify (Security Violation)"),
    (b"No bootable option or device was found",
     "the firmware found nothing to boot on the ESP"),
    (b"Failed to open \\EFI\\BOOT\\grubx64.efi", "shim found no GRUB beside it"),
)


@dataclass(frozen=True)
class ChainSpec:
    code: Path  # the firmware, read-only
    vars: Path  # this boot's own variable store: the firmware writes it
    esp: Path  # shared by every boot of a kernel: read-only
    payload: Path | None  # this boot's initrd and command line (none: MokManager's boot)
    result: Path  # the guest's /dev/ttyS1
    memory_mb: int = 512
    accel: str = "tcg"
    cpus: int = 1
    machine: str = "q35,smm=on"


@dataclass(frozen=True)
class Watch:
    """When to give up before the hard timeout."""

    silent_s: float = 60.0  # not one console byte: the firmware never started


def chain_argv(spec: ChainSpec) -> list[str]:
    """The qemu command line. Pure."""
    argv = [
        QEMU, "-accel", spec.accel, "-cpu", "max", "-smp", str(spec.cpus),
        "-m", str(spec.memory_mb), "-machine", spec.machine,
        "-global", "driver=cfi.pflash01,property=secure,value=on",
        "-nographic", "-monitor", "none", "-no-reboot", "-net", "none",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={spec.code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={spec.vars}",
        # virtio: q35's AHCI takes no read-only disk
        "-drive", f"if=virtio,format=raw,readonly=on,file={spec.esp}",
    ]
    if spec.payload is not None:
        argv += ["-drive", f"if=virtio,format=raw,readonly=on,file={spec.payload}"]
    return [*argv, "-serial", "stdio", "-serial", f"file:{spec.result}"]


def strip_ansi(console: bytes) -> bytes:
    return _ANSI.sub(b"", console)


def stage_reached(text: bytes) -> str:
    """The last boot stage `text` (ANSI-stripped console) shows. Pure."""
    reached = "nothing (not one console line)" if not text.strip() else "the firmware (OVMF)"
    for mark, name in STAGES:
        if mark in text:
            reached = name
    return reached


def fatal(text: bytes) -> str:
    """Why the chain cannot go on, from the ANSI-stripped console, with the console's own
    line; '' if nothing says so. Pure."""
    for mark, why in _FATAL:
        at = text.find(mark)
        if at >= 0:
            start = max(text.rfind(b"\n", 0, at), text.rfind(b"\r", 0, at)) + 1
            line = text[start:].splitlines()[0].decode(errors="replace").strip()
            return f"{why} (console: {line[:200]})"
    return ""


def _last_line(text: bytes) -> str:
    lines = [line.strip() for line in text.decode(errors="replace").splitlines()
             if line.strip()]
    return lines[-1][:200] if lines else ""


Driver = Callable[[int, bytes, float], bytes]  # (offset, console, quiet seconds) -> keys


def boot(spec: ChainSpec, *, timeout_s: float, console_log: Path, watch: Watch = Watch(),
         driver: Driver | None = None) -> VmEnd:
    """Boot once; how it ended. The guest's report is in spec.result. `driver` is asked,
    as the console grows, for keys to type (MokManager); it raises to end the boot."""
    spec.result.write_bytes(b"")
    console_log.write_bytes(b"")
    with runner.Console(chain_argv(spec), log_file=console_log) as con:
        size, text = -1, b""
        while True:
            code = con.wait(_POLL_S)
            offset, raw = con.output()
            if offset + len(raw) != size:  # strip only what changed, and only the end
                size, text = offset + len(raw), strip_ansi(raw[-4 * _TAIL_BYTES:])
            tail = text[-_TAIL_BYTES:].decode(errors="replace")
            if code is not None:
                return VmEnd(code, tail, timeout_s, reached=stage_reached(text))
            why = _early_stop(con, text, watch)
            if why:
                con.kill()
                return VmEnd(None, tail, timeout_s, stopped=why, reached=stage_reached(text))
            if con.elapsed_s > timeout_s:
                con.kill()
                return VmEnd(None, tail, timeout_s, reached=f"{stage_reached(text)} (last "
                                                           f"console line: {_last_line(text)})")
            if driver is not None:
                keys = driver(offset, raw, con.elapsed_s - (con.last_output_s or 0.0))
                if keys:
                    con.send(keys)


def _early_stop(con: runner.Console, text: bytes, watch: Watch) -> str:
    """Why the boot cannot go on, before its hard timeout; '' while it may."""
    why = fatal(text)
    if why:
        return why
    if con.first_output_s is None and con.elapsed_s > watch.silent_s:
        return (f"the firmware printed nothing in {watch.silent_s:.0f} s: OVMF's Secure Boot "
                "build hangs silently without SMM (it needs q35 with smm=on)")
    return ""
