"""A full Debian node under qemu for `dtk node`: systemd, udev, kmod, python3,
skopeo, a linux-image package, and dtk installed from wheels built here (its
Python dependencies from Debian's archive; google-re2, which Debian lacks, from
its wheel). No compiler, no container engine, no network in the guest.

The base root (mmdebstrap --variant=apt) is cached by content key: the sources,
the package list and the kernel. Images reach the guest on a second disk; the
guest reports over its second serial port (a file on the host), never the
console. A oneshot unit ordered after multi-user.target writes the report and
powers off.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from dtk import paths
from dtk.digest import parts_digest
from dtk.distro.debian import DebianArchive

ROOT = Path(__file__).parents[2]
PACKAGES = ("systemd", "systemd-sysv", "udev", "kmod", "python3", "skopeo",
            "python3-click", "python3-pyelftools", "python3-cryptography", "python3-yaml",
            "python3-zstandard", "python3-lz4")
RECIPE = "dtk-node-vm/1"
SITE = "usr/local/lib/python3.11/dist-packages"
REPORT_SCRIPT = """\
#!/bin/sh
# The node test's reporter: what systemd and the kernel say, to the second serial port.
{
echo "@@node kernel $(uname -r)"
echo "@@node unit $(systemctl show -p ActiveState --value dtk-node.service)" \
     "$(systemctl show -p ExecMainStatus --value dtk-node.service)"
echo "@@node order $(systemctl show -p ExecMainExitTimestampMonotonic --value dtk-node.service)" \
     "$(systemctl show -p ActiveEnterTimestampMonotonic --value network-pre.target)"
echo "@@node modules $(cut -d' ' -f1 /proc/modules | tr '\\n' ' ')"
u=dtk-node.service
echo "@@node unit-time $(systemctl show -p ExecMainStartTimestampMonotonic --value $u)" \
     "$(systemctl show -p ExecMainExitTimestampMonotonic --value $u)"
echo "@@node multi-user $(systemctl show -p ActiveEnterTimestampMonotonic --value \
     multi-user.target)"
echo "@@node begin status"; dtk node status --json; echo "@@node end status"
echo "@@node begin journal"; journalctl -b -u dtk-node.service --no-pager -o cat
echo "@@node end journal"
if [ -x /usr/local/sbin/dtk-test-then ]; then
    echo "@@node begin then"; /usr/local/sbin/dtk-test-then; echo "@@node end then"
    echo "@@node modules-after $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
fi
echo "@@node done"
} >/dev/ttyS1 2>&1
sync
systemctl poweroff --no-block
"""
REPORT_UNIT = """\
[Unit]
Description=dtk node test report
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/dtk-test-report

[Install]
WantedBy=multi-user.target
"""


def base_tar(archive: DebianArchive, kernel: str) -> Path:
    """The cached base root for `kernel` (built with mmdebstrap on first use)."""
    packages = (*PACKAGES, f"linux-image-{kernel}")
    sources = archive.sources_text()
    key = parts_digest(RECIPE, sources, *packages, length=24)
    out = paths.cache_dir() / "node-vm" / f"{key}.tar"
    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".sources")
    src.write_text(sources)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(["mmdebstrap", "--variant=apt", "--quiet", f"--include={','.join(packages)}",
                    "--format=tar", archive.os.codename, str(tmp), str(src)],
                   check=True, timeout=1800)
    tmp.replace(out)
    return out


def wheels(work: Path) -> list[Path]:
    """dtk's wheel built from this checkout, and google-re2's (not in Debian)."""
    work.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(work),
                    str(ROOT)], check=True, timeout=600, capture_output=True)
    version = metadata.version("google-re2")  # the one dtk is tested with
    subprocess.run([*pip, "download", f"google-re2=={version}", "--no-deps",
                    "--only-binary=:all:", "-d", str(work)], check=True, timeout=600,
                   capture_output=True)
    return sorted(work.glob("*.whl"))


@dataclass(frozen=True)
class Node:
    rootfs: Path
    kernel: str
    work: Path

    def dtk(self, *args: str) -> subprocess.CompletedProcess[str]:
        """dtk on the host, acting on the node's root (DTK_NODE_ROOT)."""
        env = dict(os.environ, DTK_NODE_ROOT=str(self.rootfs))
        return subprocess.run([sys.executable, "-m", "dtk", *args], env=env, check=True,
                              capture_output=True, text=True, timeout=900)


def make_node(tar: Path, kernel: str, wheel_files: list[Path], work: Path) -> Node:
    rootfs = work / "rootfs"
    rootfs.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(tar), "-C", str(rootfs), "--numeric-owner"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile",
                    "--target", str(rootfs / SITE), *map(str, wheel_files)], check=True,
                   timeout=600, capture_output=True)
    shutil.rmtree(rootfs / SITE / "bin", ignore_errors=True)
    launcher = rootfs / "usr/local/bin/dtk"
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text("#!/usr/bin/python3\nfrom dtk.cli.main import main\nmain()\n")
    launcher.chmod(0o755)
    (rootfs / "etc/fstab").write_text("/dev/vda / ext4 rw 0 1\n"
                                      "/dev/vdb /mnt/images ext4 ro 0 2\n")
    (rootfs / "mnt/images").mkdir(parents=True, exist_ok=True)
    script = rootfs / "usr/local/sbin/dtk-test-report"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(REPORT_SCRIPT)
    script.chmod(0o755)
    unit = rootfs / "etc/systemd/system/dtk-test-report.service"
    unit.write_text(REPORT_UNIT)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    return Node(rootfs, kernel, work)


def then(node: Node, script: str) -> None:
    """Shell the guest runs after its report (its output is the `then` section)."""
    path = node.rootfs / "usr/local/sbin/dtk-test-then"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)


@dataclass(frozen=True)
class Report:
    facts: dict[str, str]
    sections: dict[str, str]
    console: str


def parse(text: str, console: str) -> Report:
    facts: dict[str, str] = {}
    sections: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if current is not None:
            if line == f"@@node end {current}":
                current = None
            else:
                sections[current] = sections.get(current, "") + line + "\n"
        elif line.startswith("@@node begin "):
            current = line.removeprefix("@@node begin ")
        elif line.startswith("@@node "):
            key, _, value = line.removeprefix("@@node ").partition(" ")
            facts[key] = value
    return Report(facts, sections, console)


def disks(node: Node, images: Path) -> None:
    """The node's root disk (from its root directory) and the images disk; the root
    disk then keeps what the guest writes, across boots."""
    size = sum(f.stat().st_size for f in node.rootfs.rglob("*") if f.is_file()
               and not f.is_symlink())
    for image, tree, megabytes in ((node.work / "root.img", node.rootfs,
                                    size // 2**20 + 768),
                                   (node.work / "images.img", images, 256)):
        image.unlink(missing_ok=True)
        subprocess.run(["mke2fs", "-q", "-t", "ext4", "-d", str(tree), str(image),
                        f"{megabytes}M"], check=True, timeout=600)


def boot(node: Node, kernel: str, timeout_s: float = 900) -> Report:
    """Boot the node's disk once with `kernel` (its vmlinuz and initrd, from the root
    directory: the same files as on the disk)."""
    report, console = node.work / "report.log", node.work / "console.log"
    report.unlink(missing_ok=True)
    console.unlink(missing_ok=True)
    boot_dir = node.rootfs / "boot"
    subprocess.run(["qemu-system-x86_64", "-accel", "tcg", "-cpu", "max", "-m", "1024",
                    "-smp", "1", "-nic", "none", "-display", "none", "-no-reboot",
                    "-kernel", str(boot_dir / f"vmlinuz-{kernel}"),
                    "-initrd", str(boot_dir / f"initrd.img-{kernel}"),
                    "-append", "root=/dev/vda rw console=ttyS0 panic=-1",
                    "-drive", f"file={node.work / 'root.img'},if=virtio,format=raw",
                    "-drive", f"file={node.work / 'images.img'},if=virtio,format=raw",
                    "-serial", f"file:{console}", "-serial", f"file:{report}"],
                   check=True, timeout=timeout_s, capture_output=True)
    text = report.read_text(errors="replace") if report.exists() else ""
    return parse(text, console.read_text(errors="replace") if console.exists() else "")
