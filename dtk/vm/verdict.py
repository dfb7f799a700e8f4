"""From what the guest reported (and how the VM ended) to a verdict with the
kernel's own reason. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from dtk.kernel.verdict import Verdict
from dtk.vm.guest import Exit, Report


@dataclass(frozen=True)
class VmEnd:
    """How the qemu process ended, seen from the host."""

    returncode: int | None  # None: killed (the hard timeout, or `stopped`)
    console_tail: str
    timeout_s: float
    stopped: str = ""  # why dtk stopped the VM before its timeout (a boot chain that failed)
    reached: str = ""  # the last boot stage the console showed (firmware, GRUB, kernel)


# Kernel messages that explain a refusal, most specific first. Each is matched
# against the kernel log of the load step. All come from load_module(), before
# the module's init runs.
_KERNEL_REASONS = (
    r"disagrees about version of symbol \S+",
    r"no symbol version for \S+",
    r"version magic '[^']*' should be '[^']*'",
    r"Loading of [\w ]+ is rejected",
    r"Unknown symbol \S+ \(err -?\d+\)",
    r"Lockdown: .*",
    r"module PLT section\(s\) missing",
    r"section size must match the kernel's built struct module size.*",
    r"invalid module format|Invalid ELF header.*|Unknown rela relocation: \d+",
    r"module is from the staging directory.*",
    r"exports duplicate symbol \S+.*",
    r"\S+ Unknown parameter .*|unknown parameter '[^']*' ignored",
    r"`[^']*' invalid for parameter `[^']*'",
)
# What the kernel says while it lets a load go on: taint notices, never a refusal
# (an unsigned module logs "module verification failed" and still loads).
_NOTICES = re.compile(r"module verification failed: |loading out-of-tree module taints|"
                      r"module license '[^']*' taints|Disabling lock debugging due to|"
                      r"^dtk: step ")
# kmod's words (strerror, or its own for ENOEXEC/ENOENT) for the errors that
# load_module() itself returns, sometimes without a kernel line: a refusal.
_LOADER_ERRORS = ("Invalid module format", "Exec format error", "Key was rejected by service",
                  "Required key not available", "Key has expired", "Bad message",
                  "Operation not permitted", "File exists")
_ERRNO_NAMES = {"No such device": "ENODEV", "No such device or address": "ENXIO",
                "Input/output error": "EIO", "Device or resource busy": "EBUSY",
                "Cannot allocate memory": "ENOMEM", "Invalid argument": "EINVAL",
                "Operation not supported": "EOPNOTSUPP", "Timer expired": "ETIME",
                "Connection timed out": "ETIMEDOUT", "Resource temporarily unavailable":
                "EAGAIN", "Function not implemented": "ENOSYS"}
_ABSENT_HARDWARE = ("ENODEV", "ENXIO")
_COULD_NOT_INSERT = re.compile(r"could not insert '([^']*)': (.*)$")
_MODPROBE_ERROR = re.compile(r"^(?:modprobe: )?(?:ERROR|FATAL): (.*)$", re.M)
_PANIC = re.compile(r"Kernel panic - not syncing: .*")
_OOPS = re.compile(r"(?:BUG: .*|general protection fault.*|Oops: .*|kernel BUG at .*)")


def kernel_reason(log: str, module: str = "") -> str:
    """The line of `log` that says why a module was refused: a known message
    first, else the first line naming the module, else ''. Taint notices are
    never a reason."""
    lines = [_strip_timestamp(line).strip() for line in log.splitlines()]
    lines = [line for line in lines if line and not _NOTICES.search(line)]
    for pattern in _KERNEL_REASONS:
        for line in lines:
            if re.search(pattern, line):
                return line
    if module:
        named = re.compile(rf"\b{re.escape(module)}\b")
        return next((line for line in lines if named.search(line)), "")
    return ""


def refusal_line(log: str) -> str:
    """The kernel's own line refusing a module in `log` (load_module's words), or ''."""
    return kernel_reason(log)


def is_loader_refusal(kernel_log: str, modprobe_output: str) -> bool:
    """Whether a failed modprobe was refused by the kernel's loader (load_module)
    rather than accepted and failed by the module's own init (do_init_module).

    The loader logs why it refuses, or returns an error only it returns (bad
    format, key); an init's error comes back with no loader line. kmod says
    ENOENT as "Unknown symbol in module": without an "Unknown symbol" line it is
    an init (the module's or a dependency's) that returned -ENOENT.
    """
    if refusal_line(kernel_log):
        return True
    error = modprobe_error(modprobe_output)
    found = _COULD_NOT_INSERT.search(error)
    if found is None:
        return True  # not kmod's "could not insert": nothing says init ran
    return any(found.group(2).startswith(e) for e in _LOADER_ERRORS)


def _strip_timestamp(line: str) -> str:
    return re.sub(r"^\[\s*\d+\.\d+\]\s*", "", line)


def modprobe_error(output: str) -> str:
    found = _MODPROBE_ERROR.findall(output)
    return found[-1].strip() if found else ""


def _join(*parts: str) -> str:
    return " — ".join(p for p in parts if p)


def decide(report: Report, end: VmEnd) -> tuple[Verdict, str]:
    """The verdict and its reason, from the guest's report and the VM's end."""
    if report.exit_code is None:
        verdict, reason = _no_exit(report, end)
        if report.torn:
            reason = _join(f"the guest's result line arrived cut off ({report.torn!r})", reason,
                           "" if "console:" in reason else
                           f"console: {_last_line(end.console_tail)}")
        return verdict, reason
    explain = _BY_EXIT.get(report.exit_code, _setup_failed)
    return explain(report)


def _loaded(report: Report) -> tuple[Verdict, str]:
    return Verdict.LOADED, _loaded_note(report)


def _refused(report: Report) -> tuple[Verdict, str]:
    log, output = report.kernel_log("load"), report.sections.get("load", "")
    error = modprobe_error(output)
    if not is_loader_refusal(log, output):
        return Verdict.INIT_FAILED, init_failure(log, error, report.facts.get("module", ""))
    said = kernel_reason(log, report.facts.get("module", ""))
    firmware = "secureboot" in report.facts  # booted through OVMF, with its keys and MOKs
    if "with unavailable key is rejected" in said:
        said = _join(said, _UNTRUSTED_KEY_FIRMWARE if firmware else _UNTRUSTED_KEY)
    elif not said and "Key was rejected by service" in error:
        said = _KNOWN_KEY_MISMATCH
    return Verdict.REFUSED, _join(said, error) or "modprobe failed without a kernel message"


def init_failure(log: str, error: str, module: str) -> str:
    """Why an init failed: its errno, what that usually means, and the module's words."""
    found = _COULD_NOT_INSERT.search(error)
    failed, text = (found.group(1), found.group(2).strip()) if found else (module, error)
    if text.startswith("Unknown symbol in module"):
        name = "ENOENT"
        meaning = ("often a request_module or crypto algorithm lookup that found no module")
    else:
        name = _ERRNO_NAMES.get(text, "")
        meaning = ("compatible; the hardware it drives is absent"
                   if name in _ABSENT_HARDWARE else "")
    errno = f"-{name}" if name else f"an error ({text})"
    which = "its init" if failed.replace("-", "_") == module else f"the init of {failed}"
    words = _module_words(log, failed) if failed else ""
    return _join(f"the loader accepted it; {which} returned {errno}", meaning,
                 f"kernel: {words}" if words else "")


def _module_words(log: str, module: str) -> str:
    """The last line the module (or the kernel about its init) logged, if any."""
    named = re.compile(rf"\b{re.escape(module.replace('-', '_'))}\b|suspiciously returned")
    lines = [_strip_timestamp(line).strip() for line in log.splitlines()]
    said = [line for line in lines if named.search(line) and not _NOTICES.search(line)]
    return said[-1] if said else ""


# A VM boots through PVH with no firmware, so its keyrings hold only K's built-in
# keys: no UEFI db, no MOK (see README, "Proof by booting").
_UNTRUSTED_KEY = ("the module's signing key is not in this kernel's keyrings (a VM has only "
                  "the kernel's built-in keys); on a node it must be enrolled as a MOK "
                  "(mokutil --import CERT, confirmed at the next boot)")


# Booted through the firmware (dtk vmtest --secure-boot), the keyrings hold what a node's
# do: the built-in key, the MOKs shim publishes (.machine), db (.platform).
_UNTRUSTED_KEY_FIRMWARE = ("the module's signing key is in none of the kernel's keyrings (its "
                           "built-in key, the MOKs enrolled in this VM's firmware, db)")
# pkcs7_validate_trust() found the key; the signature does not verify: -EKEYREJECTED, and
# module_sig_check() logs nothing for it (seen on 6.1 and 6.12 under Secure Boot).
_KNOWN_KEY_MISMATCH = ("the kernel logs nothing: a key it has (built in or enrolled) "
                       "does not verify the module's content (changed after signing)")


def _not_live(report: Report) -> tuple[Verdict, str]:
    del report
    return Verdict.REFUSED, ("modprobe returned success but the module is not live in "
                             "/proc/modules (is moduleName the kernel's name for it?)")


def _check_failed(report: Report) -> tuple[Verdict, str]:
    status = report.facts.get("check-status", "?")
    return Verdict.CHECK_FAILED, _join(f"check command exited with {status}",
                                       _last_line(report.sections.get("check", "")))


def _unload_failed(report: Report) -> tuple[Verdict, str]:
    left = report.facts.get("left-loaded", "").split()
    still = (f"{', '.join(left)} still loaded after the worker's modprobe -r" if left
             else "module still present after modprobe -r")
    return Verdict.UNLOAD_FAILED, _join(modprobe_error(report.sections.get("unload", "")),
                                        still)


def _crashed(report: Report) -> tuple[Verdict, str]:
    oops = _OOPS.search(report.kernel_log(report.exit_step)) or _OOPS.search(report.kernel_log())
    return Verdict.CRASHED, _join(f"the kernel oopsed during {report.exit_step}",
                                  oops.group(0).strip() if oops else "")


def _step_timeout(report: Report) -> tuple[Verdict, str]:
    return Verdict.TIMED_OUT, _join(f"{report.exit_step} did not finish in time",
                                    _stack_summary(report.sections.get("stack", "")))


def _setup_failed(report: Report) -> tuple[Verdict, str]:
    return Verdict.NOT_RUN, _join(f"the guest could not prepare the node ({report.exit_step})",
                                  _last_line(report.sections.get("node", "")))


_BY_EXIT: dict[int, Callable[[Report], tuple[Verdict, str]]] = {
    Exit.OK: _loaded,
    Exit.REFUSED: _refused,
    Exit.NOT_LIVE: _not_live,
    Exit.CHECK_FAILED: _check_failed,
    Exit.UNLOAD_FAILED: _unload_failed,
    Exit.CRASHED: _crashed,
    Exit.STEP_TIMEOUT: _step_timeout,
}


def _no_exit(report: Report, end: VmEnd) -> tuple[Verdict, str]:
    """The guest never reported an exit status: it died or ran out of time."""
    where = f"during {report.last_step}" if report.last_step else "before dtk's init ran"
    if end.stopped:
        return Verdict.NOT_RUN, end.stopped
    panic = _PANIC.search(end.console_tail)
    if panic:
        return Verdict.CRASHED, _join(f"kernel panic {where}", panic.group(0).strip())
    if end.returncode is None:
        stage = f"; the boot had reached {end.reached}" if end.reached and not report.steps \
            else ""
        return Verdict.TIMED_OUT, f"no result after {end.timeout_s:.0f} s, {where} " \
            f"(VM killed at the hard timeout){stage}"
    oops = _OOPS.search(end.console_tail)
    # Before the kernel ran, the last console line is qemu's own complaint.
    said = oops.group(0).strip() if oops else \
        (_last_line(end.console_tail) if not report.steps else "")
    return Verdict.CRASHED, _join(f"the VM stopped {where} without a result "
                                  f"(qemu exit status {end.returncode})", said)


def _loaded_note(report: Report) -> str:
    taint = int(report.facts.get("taint", "0") or 0)
    # In a many-module boot, only what this module added is its own.
    taint &= ~int(report.facts.get("taint-before", "0") or 0)
    notes = []
    if taint & (1 << 13):  # TAINT_UNSIGNED_MODULE ('E')
        notes.append("kernel tainted: module signature missing or not trusted")
    if taint & (1 << 9):  # TAINT_WARN ('W')
        notes.append("kernel warned (taint W)")
    return "; ".join(notes)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def _stack_summary(stack: str) -> str:
    frames = [line.split("]", 1)[-1].strip() for line in stack.splitlines() if line.strip()]
    return ("stack: " + " < ".join(frames[:4])) if frames else ""
