"""Bad kernels: no vmlinuz among the kernel's files, and a kernel qemu cannot boot."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from dtk.errors import DtkError
from dtk.kernel.verdict import Verdict
from dtk.vm import cpio, guest, kernels, qemu
from dtk.vm.guest import parse_report
from dtk.vm.verdict import decide

pytestmark = pytest.mark.integration

K = "6.1.0-56-amd64"


def test_kernel_files_without_vmlinuz(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "lib/modules" / K).mkdir(parents=True)
    (root / "lib/modules" / K / "modules.dep").write_text("")
    with pytest.raises(DtkError, match=f"no /boot/vmlinuz-{K}"):
        kernels._extract(root, K, tmp_path / "cache")
    assert not (tmp_path / "cache" / "vmlinux").exists()


def test_vmlinuz_that_is_not_a_kernel(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / "boot" / f"vmlinuz-{K}").write_bytes(b"MZ" + b"\0" * 4096)
    (root / "lib/modules" / K).mkdir(parents=True)
    (root / "lib/modules" / K / "modules.dep").write_text("")
    with pytest.raises(DtkError, match="not an x86 bzImage"):
        kernels._extract(root, K, tmp_path / "cache")


def test_unbootable_kernel_is_a_crash_verdict_within_the_timeout(tmp_path: Path) -> None:
    broken = tmp_path / "vmlinux"
    broken.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"garbage" * 100)
    initrd = tmp_path / "initrd"
    buf = io.BytesIO()
    cpio.write(buf, [cpio.file("/init", guest.init_script().encode(), 0o755)])
    initrd.write_bytes(buf.getvalue())
    spec = qemu.BootSpec(broken, initrd, tmp_path / "result", qemu.kernel_cmdline())
    end = qemu.boot(spec, timeout_s=20, console_log=tmp_path / "console.log")
    verdict, reason = decide(parse_report(spec.result.read_text()), end)
    assert verdict is Verdict.CRASHED
    assert "before dtk's init ran" in reason
