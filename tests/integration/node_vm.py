"""A full Debian node under qemu for `dtk node`: systemd, udev, kmod, python3,
skopeo, a linux-image package, and dtk installed as a host owner installs it: its
Debian package (`make deb`), by `apt install ./dtk_….deb` in the root (run from the
host in a chroot, with no network). No pip, no compiler, no container engine, no
network in the guest.

The base root (mmdebstrap --variant=apt) is cached by content key: the sources,
the package list and the kernel. It holds the packages dtk's package depends on,
as apt would have fetched them on a host, so that apt needs no network here.
Images reach the guest on a second disk; the guest reports over its second
serial port (a file on the host), never the console. A oneshot unit ordered
after multi-user.target writes the report and powers off.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dtk import paths
from dtk.digest import parts_digest
from dtk.distro.debian import DebianArchive

PACKAGES = ("systemd", "systemd-sysv", "udev", "kmod", "python3", "skopeo",
            "python3-click", "python3-pyelftools", "python3-cryptography", "python3-yaml",
            "python3-zstandard", "python3-lz4")
RECIPE = "dtk-node-vm/1"
CHROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "HOME": "/root", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
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


def base_tar(archive: DebianArchive, kernel: str, extra: tuple[str, ...] = ()) -> Path:
    """The cached base root for `kernel` (built with mmdebstrap on first use), with the
    `extra` packages too (package_depends: what dtk's package needs)."""
    packages = (*PACKAGES, *extra, f"linux-image-{kernel}")
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


def package_depends(deb: Path) -> tuple[str, ...]:
    """The packages `deb` depends on, by name (each first alternative)."""
    depends = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], check=True,
                             capture_output=True, text=True, timeout=60).stdout
    return tuple(sorted({d.split("|")[0].split()[0].split(":")[0]
                         for d in depends.split(",") if d.strip()}))


@contextmanager
def mounted_for_chroot(rootfs: Path) -> Iterator[None]:
    """/proc, /sys and /dev in the root, as maintainer scripts expect them."""
    mounts = [("proc", ["-t", "proc", "proc"]), ("sys", ["-t", "sysfs", "sysfs"]),
              ("dev", ["--bind", "/dev"])]
    done = []
    try:
        for name, args in mounts:
            subprocess.run(["mount", *args, str(rootfs / name)], check=True)
            done.append(rootfs / name)
        yield
    finally:
        for path in reversed(done):
            subprocess.run(["umount", "-l", str(path)], check=False)


def chroot(rootfs: Path, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """A command in the node's root, run natively from the host, with no network (a
    network namespace of its own): maintainer scripts and the /etc/kernel hooks they
    run fire as they would in the guest."""
    with mounted_for_chroot(rootfs):
        done = subprocess.run(["unshare", "--net", "chroot", str(rootfs), *argv], check=False,
                              capture_output=True, text=True, timeout=1200, env=CHROOT_ENV)
    assert not check or done.returncode == 0, done.stdout + done.stderr
    return done


def install_deb(rootfs: Path, deb: Path) -> float:
    """`apt install ./dtk_….deb` in the root, as a host owner runs it; its seconds."""
    (rootfs / "tmp" / deb.name).write_bytes(deb.read_bytes())
    start = time.monotonic()
    chroot(rootfs, "apt", "install", "-y", f"/tmp/{deb.name}")
    seconds = time.monotonic() - start
    (rootfs / "tmp" / deb.name).unlink()
    return seconds


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


def make_node(tar: Path, kernel: str, deb: Path, work: Path) -> Node:
    rootfs = work / "rootfs"
    rootfs.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(tar), "-C", str(rootfs), "--numeric-owner"], check=True)
    seconds = install_deb(rootfs, deb)
    print(f"apt install {deb.name}: {seconds:.1f} s")
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
