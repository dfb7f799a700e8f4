"""Verdicts and the kernel's reasons, from reports shaped like real guests' output."""

from __future__ import annotations

import pytest

from dtk.kernel.verdict import Verdict
from dtk.vm.guest import Report, parse_report
from dtk.vm.verdict import VmEnd, decide, kernel_reason

CLEAN = VmEnd(0, "", 60)


def report(exit_code: int | None, step: str = "load", **sections: str) -> Report:
    return Report(steps=[("boot", 2.0), (step, 2.1)], sections=dict(sections),
               exit_code=exit_code, exit_step=step)


@pytest.mark.parametrize(("log", "reason"), [
    ("[ 2.4] dtk_example: disagrees about version of symbol module_layout",
     "dtk_example: disagrees about version of symbol module_layout"),
    ("[ 1.0] Loading of unsigned module is rejected", "Loading of unsigned module is rejected"),
    ("[ 1.0] Loading of module with unavailable key is rejected",
     "Loading of module with unavailable key is rejected"),
    ("[ 3.1] v4l2loopback: Unknown symbol video_ioctl2 (err -2)",
     "v4l2loopback: Unknown symbol video_ioctl2 (err -2)"),
    ("[ 3.1] x: version magic '6.1.0-47-amd64 SMP mod_unload modversions ' should be "
     "'6.1.0-56-rt-amd64 SMP preempt_rt mod_unload modversions '",
     "x: version magic '6.1.0-47-amd64 SMP mod_unload modversions ' should be "
     "'6.1.0-56-rt-amd64 SMP preempt_rt mod_unload modversions '"),
    ("[ 8.0] module dtk_example: .gnu.linkonce.this_module section size must match the "
     "kernel's built struct module size at run time",
     "module dtk_example: .gnu.linkonce.this_module section size must match the "
     "kernel's built struct module size at run time"),
    ("[ 1.0] random noise", ""),
    ("[ 1.0] dtk_example: something new the kernel says", "dtk_example: something new the "
     "kernel says"),
])
def test_kernel_reason(log: str, reason: str) -> None:
    assert kernel_reason("[ 0.1] earlier line\n" + log + "\n", "dtk_example") == reason


def test_refused_combines_the_kernel_and_modprobe() -> None:
    verdict, reason = decide(report(10, load="modprobe: ERROR: could not insert 'x': Key was "
                                     "rejected by service",
                                     dmesg="[ 1.0] Loading of unsigned module is rejected"),
                             CLEAN)
    assert verdict is Verdict.REFUSED
    assert reason == ("Loading of unsigned module is rejected — could not insert 'x': "
                      "Key was rejected by service")


def test_loaded_notes_an_untrusted_signature() -> None:
    r = report(0, "unload")
    r.facts["taint"] = str(1 << 13)
    assert decide(r, CLEAN) == (Verdict.LOADED,
                                "kernel tainted: module signature missing or not trusted")
    r.facts["taint"] = "0"
    assert decide(r, CLEAN) == (Verdict.LOADED, "")


def test_oops_while_loading() -> None:
    verdict, reason = decide(report(20, dmesg="[ 5.0] BUG: kernel NULL pointer dereference, "
                                    "address: 0000000000000000\n[ 5.1] Oops: 0000 [#1]"), CLEAN)
    assert verdict is Verdict.CRASHED
    assert "NULL pointer dereference" in reason and "during load" in reason


def test_step_timeout_names_the_stack() -> None:
    verdict, reason = decide(report(30, stack="[<0>] msleep+0x29/0x40\n"
                                    "[<0>] dtk_hang_init+0x1b/0x1000 [dtk_hang]"), CLEAN)
    assert verdict is Verdict.TIMED_OUT
    assert reason == ("load did not finish in time — stack: msleep+0x29/0x40 < "
                      "dtk_hang_init+0x1b/0x1000 [dtk_hang]")


def test_check_and_unload_failures() -> None:
    r = report(12, "unload", check="cat: can't open '/dev/dtk_example'")
    r.facts["check-status"] = "1"
    assert decide(r, CLEAN) == (Verdict.CHECK_FAILED, "check command exited with 1 — "
                                "cat: can't open '/dev/dtk_example'")
    assert decide(report(13, "unload"), CLEAN)[0] is Verdict.UNLOAD_FAILED
    assert decide(report(11, "verify"), CLEAN)[0] is Verdict.REFUSED
    assert decide(report(40, "node"), CLEAN)[0] is Verdict.NOT_RUN


def test_panic_without_a_result() -> None:
    console = "[ 6.8] Kernel panic - not syncing: dtk_panic: panicking on purpose\n[ 6.9] ..."
    verdict, reason = decide(parse_report("@@dtk step load 6.0\n"), VmEnd(0, console, 60))
    assert verdict is Verdict.CRASHED
    assert reason == ("kernel panic during load — Kernel panic - not syncing: dtk_panic: "
                      "panicking on purpose")


def test_killed_at_the_hard_timeout() -> None:
    verdict, reason = decide(parse_report("@@dtk step load 6.0\n"), VmEnd(None, "", 30))
    assert verdict is Verdict.TIMED_OUT
    assert reason == "no result after 30 s, during load (VM killed at the hard timeout)"


def test_kernel_never_reached_init() -> None:
    verdict, reason = decide(parse_report(""), VmEnd(1, "qemu: could not load kernel", 30))
    assert verdict is Verdict.CRASHED
    assert reason == ("the VM stopped before dtk's init ran without a result (qemu exit "
                      "status 1) — "
                      "qemu: could not load kernel")


def test_the_load_steps_kernel_words_reach_the_reason() -> None:
    text = ("@@dtk step load 3.3\n@@dtk begin load\nmodprobe: ERROR: could not insert 'apfs': "
            "Unknown symbol in module, or unknown parameter (see dmesg)\n@@dtk end load\n"
            "@@dtk begin dmesg\n[ 1.0] Lockdown: early noise\n[ 3.3] dtk: step load\n"
            "[ 3.4] apfs: Unknown symbol crc32c (err -2)\n@@dtk end dmesg\n@@dtk exit 10 load\n")
    verdict, reason = decide(parse_report(text), CLEAN)
    assert verdict is Verdict.REFUSED
    assert reason.startswith("apfs: Unknown symbol crc32c (err -2) — could not insert 'apfs'")


def test_enoent_without_a_kernel_line_says_an_init_returned_it() -> None:
    text = ("@@dtk step load 3.3\n@@dtk begin load\nmodprobe: ERROR: could not insert "
            "'dm_writeboost': Unknown symbol in module, or unknown parameter (see dmesg)\n"
            "@@dtk end load\n@@dtk begin dmesg\n[ 3.3] dtk: step load\n@@dtk end dmesg\n"
            "@@dtk exit 10 load\n")
    verdict, reason = decide(parse_report(text), CLEAN)
    assert verdict is Verdict.INIT_FAILED
    assert "returned -ENOENT" in reason and "request_module" in reason


def _failed_load(error: str, *kernel: str) -> str:
    lines = "".join(f"[ 3.4] {line}\n" for line in kernel)
    return (f"@@dtk kv module tp_smapi\n@@dtk step load 3.3\n@@dtk begin load\n"
            f"insmod /opt/lib/modules/K/updates/dkms/thinkpad_ec.ko\nmodprobe: ERROR: "
            f"could not insert '{error}\n@@dtk end load\n@@dtk begin dmesg\n"
            f"[ 3.3] dtk: step load\n{lines}@@dtk end dmesg\n@@dtk exit 10 load\n")


def test_an_init_that_finds_no_device_is_init_failed_not_refused() -> None:
    """A hardware driver in a VM: the loader took it (tainting the kernel, which
    logs first), then its init returned -ENODEV. The taint notice is no reason."""
    text = _failed_load("tp_smapi': No such device",
                        "thinkpad_ec: module verification failed: signature and/or "
                        "required key missing - tainting kernel",
                        "tp_smapi: tp_smapi module not loaded: not a ThinkPad")
    verdict, reason = decide(parse_report(text), CLEAN)
    assert verdict is Verdict.INIT_FAILED
    assert reason == ("the loader accepted it; its init returned -ENODEV — compatible; the "
                      "hardware it drives is absent — kernel: tp_smapi: tp_smapi module not "
                      "loaded: not a ThinkPad")


def test_a_dependencys_init_failure_names_the_dependency() -> None:
    verdict, reason = decide(parse_report(_failed_load("thinkpad_ec': No such device")), CLEAN)
    assert verdict is Verdict.INIT_FAILED
    assert reason.startswith("the loader accepted it; the init of thinkpad_ec returned -ENODEV")


@pytest.mark.parametrize(("error", "kernel"), [
    ("x': Invalid module format", ""),  # ENOEXEC: load_module only
    ("x': Key was rejected by service", ""),
    ("x': No such device", "x: disagrees about version of symbol module_layout"),
    ("x': Unknown symbol in module, or unknown parameter (see dmesg)",
     "x: Unknown symbol video_ioctl2 (err -2)"),
])
def test_the_loaders_refusals_stay_refused(error: str, kernel: str) -> None:
    text = _failed_load(error, *([kernel] if kernel else []))
    assert decide(parse_report(text), CLEAN)[0] is Verdict.REFUSED


def test_a_torn_result_is_a_guest_failure_with_the_console_tail() -> None:
    end = VmEnd(0, "[ 3.9] dm_writeboost: loaded\n[ 4.0] reboot: Power down\n", 60)
    verdict, reason = decide(parse_report("@@dtk step load 3.3\n@@dtk exit 1"), end)
    assert verdict is Verdict.CRASHED  # not NOT_RUN (status 1), not any status at all
    assert "cut off ('@@dtk exit 1')" in reason
    assert "reboot: Power down" in reason


def test_an_unknown_key_under_sig_enforce_says_to_enroll_it() -> None:
    text = ("@@dtk step load 3.3\n@@dtk begin load\nmodprobe: ERROR: could not insert 'x': "
            "Key was rejected by service\n@@dtk end load\n@@dtk begin dmesg\n[ 3.3] dtk: step "
            "load\n[ 3.4] Loading of module with unavailable key is rejected\n@@dtk end dmesg\n"
            "@@dtk exit 10 load\n")
    verdict, reason = decide(parse_report(text), CLEAN)
    assert verdict is Verdict.REFUSED
    assert reason.startswith("Loading of module with unavailable key is rejected — the module's "
                             "signing key is not in this kernel's keyrings")
    assert "mokutil --import" in reason
    assert reason.endswith("could not insert 'x': Key was rejected by service")


def test_unload_that_leaves_a_module_of_the_order_loaded() -> None:
    """The guest lists the modules of modulesLoadingOrder still in /sys/module after the
    worker's one `modprobe -r` (KMM f17d16d unloads the whole order in one call)."""
    report = parse_report("@@dtk step unload 2.0\n@@dtk kv left-loaded kmm_ul_c\n"
                          "@@dtk exit 13 unload\n")
    assert decide(report, CLEAN) == (
        Verdict.UNLOAD_FAILED, "kmm_ul_c still loaded after the worker's modprobe -r")


def test_a_chain_that_stalls_or_is_stopped_says_where() -> None:
    """A Secure Boot boot that never reached dtk's init: stopped early by the console watch
    (not run, with why), or killed at the hard timeout naming the last stage it showed."""
    empty = parse_report("")
    stopped = VmEnd(None, "", 180, stopped="GRUB refused the kernel: …", reached="GRUB")
    assert decide(empty, stopped) == (Verdict.NOT_RUN, "GRUB refused the kernel: …")
    stalled = VmEnd(None, "grub> ", 180, reached="GRUB (last console line: grub>)")
    verdict, reason = decide(empty, stalled)
    assert verdict is Verdict.TIMED_OUT
    assert reason.endswith("the boot had reached GRUB (last console line: grub>)")


def test_refusals_under_secure_boot_speak_of_the_firmwares_keys() -> None:
    """Booted through the firmware (the guest reported SecureBoot), an unknown key is one
    in none of the keyrings it fills; a known key whose signature does not match gets no
    kernel line, and the reason says so."""
    def refused(dmesg: str) -> str:
        text = ("@@dtk kv secureboot  06 00 00 00 01\n@@dtk step load 3.0\n"
                "@@dtk begin load\nmodprobe: ERROR: could not insert 'crc7': Key was rejected "
                f"by service\n@@dtk end load\n@@dtk begin dmesg\n[ 3.0] dtk: step load\n{dmesg}"
                "@@dtk end dmesg\n@@dtk exit 10 load\n")
        verdict, reason = decide(parse_report(text), VmEnd(0, "", 60))
        assert verdict is Verdict.REFUSED
        return reason
    assert "the MOKs enrolled in this VM's firmware" in refused(
        "[ 3.1] Loading of module with unavailable key is rejected\n")
    assert refused("").startswith("the kernel logs nothing: a key it has")
