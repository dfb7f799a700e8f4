"""Pure planning around a boot: qemu's command line, the kernel command line,
the guest's step timeout, per-kernel image names and retargeted trees."""

from __future__ import annotations

from pathlib import Path

from dtk.vm import cpio, qemu
from dtk.vm.driver import DriverTree, ImageContents
from dtk.vm.vmtest import _retarget, image_for, step_timeout


def test_qemu_argv() -> None:
    spec = qemu.BootSpec(Path("/k/vmlinux"), Path("/w/initrd"), Path("/w/result"),
                         qemu.kernel_cmdline(sig_enforce=True, append="foo=1"), memory_mb=768)
    argv = qemu.qemu_argv(spec)
    assert argv[0] == "qemu-system-x86_64"
    joined = " ".join(argv)
    for flag in ("-accel tcg", "-cpu max", "-m 768", "-nographic", "-no-reboot", "-net none",
                 "-kernel /k/vmlinux", "-initrd /w/initrd", "-serial stdio",
                 "-serial file:/w/result", "-monitor none"):
        assert flag in joined
    assert argv[argv.index("-append") + 1] == (
        "console=ttyS0 loglevel=4 panic=-1 cryptomgr.notests module.sig_enforce=1 foo=1")


def test_plain_cmdline() -> None:
    assert qemu.kernel_cmdline() == "console=ttyS0 loglevel=4 panic=-1 cryptomgr.notests"


def test_step_timeout_leaves_room_inside_the_vm_timeout() -> None:
    for vm in (10, 20, 30, 60, 300):
        assert 3 <= step_timeout(vm) < vm
    assert step_timeout(60) == 31


def test_image_for_substitutes_kmm_variables() -> None:
    template = "localhost/dtk-driver/m:${KERNEL_FULL_VERSION}"
    assert image_for(template, "6.12.117+deb12-amd64") == \
        "localhost/dtk-driver/m:6.12.117_deb12-amd64"
    assert image_for("plain:tag", "6.1.0-56-amd64") == "plain:tag"


def test_retarget_moves_modules_to_the_booted_release() -> None:
    old = "/opt/lib/modules/6.1.0-47-amd64"
    tree = DriverTree("6.1.0-47-amd64", [cpio.file(f"{old}/extra/m.ko", b"x"),
                                         cpio.file(f"{old}/modules.dep", b"extra/m.ko:\n")],
                      {"m": f"{old}/extra/m.ko"}, {"videodev"})
    contents = ImageContents({"6.1.0-47-amd64": tree}, {}, [])
    moved = _retarget(contents, "6.1.0-47-amd64", "6.1.0-56-amd64")
    new_tree = moved.trees["6.1.0-56-amd64"]
    assert [e.path for e in new_tree.entries] == [
        "/opt/lib/modules/6.1.0-56-amd64/extra/m.ko",
        "/opt/lib/modules/6.1.0-56-amd64/modules.dep"]
    assert new_tree.in_tree_needs == ["videodev"]
    missing = _retarget(ImageContents({}, {"6.1.0-47-amd64": "none"}, []),
                        "6.1.0-47-amd64", "6.1.0-56-amd64")
    assert missing.missing == {"6.1.0-56-amd64": "none"}
