"""§5 of the node issue, on a real Debian node under qemu (see node_vm): a driver
image declared with `dtk node add` loads at boot, before network-pre.target,
as KMM's worker loads it; nothing of the guest's console is scraped. dtk is in
each node's root as a host owner puts it there: `apt install ./dtk_….deb`."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtk.distro.debian import DebianArchive
from dtk.engine import buildah
from dtk.kernel import normalize
from dtk.toolkit.images import ToolkitImage
from tests.integration import node_vm
from tests.integration.test_node import (
    EXAMPLE,
    build_dkms,
    from_archive,
    images,
    to_archive,
)

pytestmark = pytest.mark.integration

__all__ = ["images"]  # the fixture, imported so pytest finds it here too


@pytest.fixture
def work(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The node's root and disks (about 2 GB), removed afterwards."""
    path = tmp_path_factory.mktemp("node-vm")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_declared_image_loads_at_boot_before_the_network_and_is_removed(
        work: Path, archive: DebianArchive, kernel_61: str, images: dict[str, Path],
        dtk_deb: Path) -> None:
    tar = node_vm.base_tar(archive, kernel_61, node_vm.package_depends(dtk_deb))
    node = node_vm.make_node(tar, kernel_61, dtk_deb, work)
    disk = work / "images"
    disk.mkdir()
    shutil.copy(images["example"], disk / "example.tar")
    node.dtk("node", "add", "oci-archive:/mnt/images/example.tar", "--module", "dtk_example",
             "--kernel", kernel_61)
    # §5.4, once the boot is reported: remove leaves nothing behind.
    node_vm.then(node, "dtk node remove dtk-example\nfind /etc/dtk /var/lib/dtk\n")
    node_vm.disks(node, disk)
    report = node_vm.boot(node, kernel_61)
    where = f"console:\n{report.console[-3000:]}\nreport: {report.facts} {report.sections}"
    assert report.facts.get("done") is not None, where
    assert report.facts["kernel"] == kernel_61
    assert report.facts["unit"] == "active 0", where
    assert "dtk_example" in report.facts["modules"].split(), where
    finished, network_pre = (int(t) for t in report.facts["order"].split())
    assert 0 < finished <= network_pre, where  # loaded before network-pre.target
    start, end = (int(t) for t in report.facts["unit-time"].split())
    print(f"dtk-node.service ran {(end - start) / 1e6:.1f} s, ended at {end / 1e6:.1f} s; "
          f"multi-user.target at {int(report.facts['multi-user']) / 1e6:.1f} s")
    (status,) = json.loads(report.sections["status"])
    assert status["ready"] and status["kernel"] == kernel_61, status
    assert status["loaded"]["loaded"], status
    assert "dtk node: dtk-example: loaded" in report.sections["journal"], where
    assert report.sections["then"].split() == ["removed", "dtk-example", "(unloaded)", "/etc/dtk",
                                               "/etc/dtk/modules", "/var/lib/dtk"], where
    assert "dtk_example" not in report.facts["modules-after"].split(), where


def test_an_image_for_another_abi_is_not_inserted_and_the_boot_goes_on(
        work: Path, archive: DebianArchive, kernel_61: str, images: dict[str, Path],
        dtk_deb: Path) -> None:
    """§5.3: crc7 from another 6.1 ABI's package, laid out for kernel_61: refused with
    the kernel's reason, the unit fails, multi-user.target is still reached."""
    tar = node_vm.base_tar(archive, kernel_61, node_vm.package_depends(dtk_deb))
    node = node_vm.make_node(tar, kernel_61, dtk_deb, work)
    disk = work / "images"
    disk.mkdir()
    shutil.copy(images["other-abi"], disk / "other.tar")
    node.dtk("node", "add", "oci-archive:/mnt/images/other.tar", "--module", "crc7",
             "--kernel", kernel_61)
    node_vm.disks(node, disk)
    report = node_vm.boot(node, kernel_61)
    where = f"console:\n{report.console[-3000:]}\nreport: {report.facts} {report.sections}"
    assert report.facts.get("done") is not None, where  # multi-user.target was reached
    assert report.facts["unit"] == "failed 1", where
    assert "crc7" not in report.facts["modules"].split(), where
    (status,) = json.loads(report.sections["status"])
    assert not status["ready"]
    assert "disagrees about version of symbol" in status["reason"], status
    assert not status["loaded"]["loaded"], status
    assert "dtk node: crc7: NOT LOADED: not inserted: refused: crc7" \
        in report.sections["journal"], where


@pytest.fixture(scope="module")
def example_612(tmp_path_factory: pytest.TempPathFactory, toolkit_612: ToolkitImage,
                kernel_612: str) -> Iterator[Path]:
    """The example driver built for kernel_612, as an OCI archive."""
    del toolkit_612
    work = tmp_path_factory.mktemp("node-612")
    tag = f"localhost/dtk-node-{secrets.token_hex(4)}/dtk-example:{normalize(kernel_612)}"
    try:
        subprocess.run([sys.executable, "-m", "dtk", "build", "-f", str(EXAMPLE), "--kernel",
                        kernel_612, "--image", tag], check=True, timeout=1800,
                       capture_output=True, env=dict(os.environ, DTK_STATE_DIR=str(work)))
        subprocess.run(["skopeo", "copy", f"containers-storage:{tag}",
                        f"oci-archive:{work / 'example.tar'}"], check=True, capture_output=True)
        yield work / "example.tar"
    finally:
        subprocess.run(["buildah", "rmi", tag], capture_output=True, check=False)


def chroot_dpkg(rootfs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """dpkg in the node's root, run natively from the host: the package's maintainer
    scripts and the /etc/kernel hooks they run fire as they would in the guest."""
    return node_vm.chroot(rootfs, "dpkg", *args)


def test_the_next_kernels_package_prepares_it_and_it_boots_with_the_driver(
        work: Path, archive: DebianArchive, kernel_61: str, kernel_612: str,
        images: dict[str, Path], example_612: Path, dtk_deb: Path) -> None:
    """§5.2: `dpkg -i` of the next kernel's linux-image (run in the root from the host,
    natively: the same /etc/kernel/postinst.d hooks fire) prepares its image; the node
    then boots that kernel and loads the driver built for it; `dpkg --purge` of that
    package removes what was prepared for it (§4, postrm)."""
    tar = node_vm.base_tar(archive, kernel_61, node_vm.package_depends(dtk_deb))
    node = node_vm.make_node(tar, kernel_61, dtk_deb, work)
    disk = work / "images"
    disk.mkdir()
    for kernel, archive_file in ((kernel_61, images["example"]), (kernel_612, example_612)):
        shutil.copy(archive_file, disk / f"example-{normalize(kernel)}.tar")
    shutil.copytree(disk, node.rootfs / "mnt/images", dirs_exist_ok=True)  # for the hook
    node.dtk("node", "add", "oci-archive:/mnt/images/example-${KERNEL_FULL_VERSION}.tar",
             "--module", "dtk_example", "--kernel", kernel_61, "--kernel", kernel_612)
    (entry,) = [e for e in archive.kernels() if e.release == kernel_612]
    (deb,) = archive.index.download([entry.image_package], work / "debs")
    shutil.copy(deb, node.rootfs / "tmp/kernel.deb")
    dpkg = chroot_dpkg(node.rootfs, "-i", "/tmp/kernel.deb")
    # On stderr, as the Debian Kernel Handbook has hooks write (stdout may be debconf's).
    assert f"dtk node: dtk-example for {kernel_612}: ready: loads" in dpkg.stderr, dpkg.stderr
    (node.rootfs / "tmp/kernel.deb").unlink()
    prepared = json.loads((node.rootfs / f"var/lib/dtk/kernels/{kernel_612}/dtk-example.json"
                           ).read_text())
    node_vm.disks(node, disk)
    report = node_vm.boot(node, kernel_612)
    where = f"console:\n{report.console[-3000:]}\nreport: {report.facts} {report.sections}"
    assert report.facts.get("kernel") == kernel_612, where
    assert report.facts["unit"] == "active 0", where
    assert "dtk_example" in report.facts["modules"].split(), where
    (status,) = json.loads(report.sections["status"])
    assert status["ready"] and status["kernel"] == kernel_612
    # Loaded from what the hook prepared before the reboot, not fetched at boot.
    assert status["prepared_at"] == prepared["prepared_at"]
    assert status["digest"] == prepared["digest"]
    # The package purged (in the root, from the host, after the guest is off): its
    # postrm.d hook forgets what was prepared for that kernel, and the tree only it used.
    chroot_dpkg(node.rootfs, "--purge", entry.image_package)
    assert not (node.rootfs / f"var/lib/dtk/kernels/{kernel_612}").exists()
    assert not (node.rootfs / "var/lib/dtk" / prepared["tree"]).exists()
    assert (node.rootfs / "etc/dtk/modules/dtk-example.yaml").is_file()  # still declared


MODULE = """\
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata:
  name: dtk-example
  namespace: default
spec:
  selector: {{}}
  moduleLoader:
    container:
      modprobe:
        moduleName: dtk_example
      kernelMappings:
        - regexp: '{regexp}'
          containerImage: oci-archive:/mnt/images/example-${{KERNEL_FULL_VERSION}}.tar
"""
# What the test itself puts in the root (node_vm's reporter, the images' mount point).
PLUMBING = re.compile(r"(^|/)dtk-test-|^mnt/images(/|$)")
# What booting, apt and dpkg change in any root, whatever they install or run; and the
# blob info cache of containers/image (skopeo's, run as root), which every container tool
# on a host shares: not dtk's to purge.
CHURN = re.compile(r"^(var/log|var/lib/systemd|var/lib/apt|var/lib/dpkg|var/cache/apt|"
                   r"var/cache/debconf|var/cache/ldconfig|var/tmp|tmp|"
                   r"var/lib/containers/cache)(/|$)|^var/lib/containers$")


def release_pattern(kernels: tuple[str, ...]) -> str:
    """One RE2 regexp for these releases, each run of digits as \\d+: the kernelMapping
    the node's own dtk evaluates (with Debian's libre2, through the package's binding)."""
    return "^(" + "|".join(re.sub(r"\d+", r"\\d+", re.escape(k)) for k in kernels) + ")$"


def tree(rootfs: Path) -> set[str]:
    """Every path under the root (links not followed), relative to it."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for name in (*dirnames, *filenames):
            found.add((Path(dirpath) / name).relative_to(rootfs).as_posix())
    return found


def test_the_host_owners_path_apt_install_add_upgrade_reboot_and_purge_leaves_nothing(
        work: Path, archive: DebianArchive, kernel_61: str, kernel_612: str,
        images: dict[str, Path], example_612: Path, dtk_deb: Path) -> None:
    """Issue 28 §1 and §2, all in the node's root with the dtk its package installed: `apt
    install ./dtk_….deb`; `dtk node add -f` (a Module whose regexp mapping the package's
    RE2 evaluates); the next kernel's package (its postinst hook prepares); a reboot into
    it (loaded; then, dtk made unrunnable, the unit fails with the reason in its
    journal); `apt remove` (declarations and conffiles kept; the hook says dtk cannot
    run); `apt purge` (nothing of dtk's left)."""
    tar = node_vm.base_tar(archive, kernel_61, node_vm.package_depends(dtk_deb))
    before = {p.removeprefix("./").rstrip("/") for p in subprocess.run(
        ["tar", "--quoting-style=literal", "-tf", str(tar)], check=True, capture_output=True,
        text=True).stdout.splitlines()}
    node = node_vm.make_node(tar, kernel_61, dtk_deb, work)
    disk = work / "images"
    disk.mkdir()
    for kernel, archive_file in ((kernel_61, images["example"]), (kernel_612, example_612)):
        shutil.copy(archive_file, disk / f"example-{normalize(kernel)}.tar")
    shutil.copytree(disk, node.rootfs / "mnt/images", dirs_exist_ok=True)  # for the hook
    module = node.rootfs / "tmp/module.yaml"
    module.write_text(MODULE.format(regexp=release_pattern((kernel_61, kernel_612))))
    added = node_vm.chroot(node.rootfs, "dtk", "node", "add", "-f", "/tmp/module.yaml",
                           "--kernel", kernel_61, "--kernel", kernel_612)
    assert "declared dtk-example (dtk_example)" in added.stdout, added.stdout
    module.unlink()
    (entry,) = [e for e in archive.kernels() if e.release == kernel_612]
    (deb,) = archive.index.download([entry.image_package], work / "debs")
    shutil.copy(deb, node.rootfs / "tmp/kernel.deb")
    dpkg = chroot_dpkg(node.rootfs, "-i", "/tmp/kernel.deb")
    assert f"dtk node: dtk-example for {kernel_612}: ready: loads" in dpkg.stderr, dpkg.stderr
    (node.rootfs / "tmp/kernel.deb").unlink()
    prepared = json.loads((node.rootfs / f"var/lib/dtk/kernels/{kernel_612}/dtk-example.json"
                           ).read_text())
    node_vm.then(node, "mv /usr/bin/dtk /usr/bin/dtk.away\n"
                       "systemctl restart dtk-node.service; echo restart $?\n"
                       "systemctl show -p ActiveState -p ExecMainStatus dtk-node.service\n"
                       "journalctl -b -u dtk-node.service -o cat --no-pager | tail -n 4\n"
                       "mv /usr/bin/dtk.away /usr/bin/dtk\n")
    node_vm.disks(node, disk)
    report = node_vm.boot(node, kernel_612)
    where = f"console:\n{report.console[-3000:]}\nreport: {report.facts} {report.sections}"
    assert report.facts.get("kernel") == kernel_612, where
    assert report.facts["unit"] == "active 0", where
    assert "dtk_example" in report.facts["modules"].split(), where
    (status,) = json.loads(report.sections["status"])
    assert status["ready"] and status["prepared_at"] == prepared["prepared_at"], status
    # dtk unrunnable: the unit fails (203: systemd could not exec it) and says why.
    then = report.sections["then"]
    assert "restart 1" in then and "ActiveState=failed" in then and \
        "ExecMainStatus=203" in then, where
    assert "/usr/bin/dtk: No such file or directory" in then, where

    removed = node_vm.chroot(node.rootfs, "apt", "remove", "-y", "dtk")
    assert not (node.rootfs / "usr/bin/dtk").exists(), removed.stdout
    for kept in ("etc/dtk/modules/dtk-example.yaml", "etc/kernel/postinst.d/dtk-node",
                 f"var/lib/dtk/kernels/{kernel_612}/dtk-example.json"):
        assert (node.rootfs / kept).is_file(), kept
    hook = node_vm.chroot(node.rootfs, "/etc/kernel/postinst.d/dtk-node", kernel_612)
    assert hook.stdout == "" and "dtk-node: cannot run dtk (exit 127)" in hook.stderr, hook

    node_vm.chroot(node.rootfs, "apt", "purge", "-y", "dtk")
    after = tree(node.rootfs)
    left = sorted(p for p in after if re.search(r"dtk|driver.toolkit", p)
                  and not PLUMBING.search(p))
    assert left == [], left
    # Nothing new since the root was made, but what the boots, apt and the kernel
    # package made (its files, and what its postinst generated, carry its release).
    new = sorted(p for p in after - before if not PLUMBING.search(p) and not CHURN.search(p)
                 and kernel_612 not in p and not p.startswith("run/"))
    assert new == [], "\n".join(new[:100])


FIRMWARE_REPORT = """\
find /var/lib/firmware -printf 'fw %y %p %l\\n' | sort
cat /etc/dtk-sentinel
"""


def with_firmware(archive_file: Path, out: Path) -> Path:
    """The driver's image with a linux-firmware-style /firmware: versioned files and
    links to them, a link to a directory, and a link that stays inside the image but
    not inside its firmware (copied under /var/lib/firmware it would name /var/lib: it
    is left out)."""
    source = from_archive(archive_file)
    tag = f"localhost/dtk-node-{secrets.token_hex(4)}/fw:1"
    try:
        with buildah.working_container(source) as ctr:
            with ctr.mounted() as root:
                vendor = root / "firmware/vendor"
                vendor.mkdir(parents=True)
                (vendor / "dev-1.0.bin").write_bytes(b"firmware 1.0")
                (vendor / "dev.bin").symlink_to("dev-1.0.bin")
                (root / "firmware/current").symlink_to("vendor")
                (root / "firmware/vendor/up").symlink_to("../..")
            ctr.commit(tag)
    finally:
        subprocess.run(["buildah", "rmi", source], capture_output=True, check=False)
    return to_archive(tag, out)


def firmware_seen(report: node_vm.Report) -> dict[str, str]:
    """/var/lib/firmware as the guest's `then` script listed it: path → kind (-> link)."""
    seen = {}
    for line in report.sections.get("then", "").splitlines():
        if line.startswith("fw "):
            _fw, kind, path, *target = line.split()
            seen[path] = kind + (f" -> {target[0]}" if target else "")
    return seen


@pytest.fixture(scope="module")
def uio_images(tmp_path_factory: pytest.TempPathFactory, toolkit_61: ToolkitImage,
               toolkit_612: ToolkitImage, kernel_61: str, kernel_612: str) -> dict[str, Path]:
    """Debian's dpdk-kmods-dkms (igb_uio, which needs the in-tree uio) for both kernels,
    with firmware: one of the bookworm *-dkms packages with an in-tree dependency that
    still builds for 6.12 (v4l2loopback 0.12.7 does not: strlcpy is gone)."""
    del toolkit_61, toolkit_612
    work = tmp_path_factory.mktemp("node-uio-vm")
    built = build_dkms(work, "dpdk-kmods-dkms", (kernel_61, kernel_612))
    return {k: with_firmware(a, work / f"igb-uio-fw-{normalize(k)}.tar")
            for k, a in built.items()}


UIO_MODULE = """\
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: igb-uio, namespace: default}
spec:
  selector: {}
  moduleLoader:
    container:
      modprobe: {moduleName: igb_uio, firmwarePath: /firmware}
      kernelMappings:
      - regexp: '^.+$'
        containerImage: oci-archive:/mnt/images/igb-uio-${KERNEL_FULL_VERSION}.tar
"""


def test_a_real_driver_with_an_in_tree_dependency_and_firmware_loads_on_every_boot(
        work: Path, archive: DebianArchive, kernel_61: str, kernel_612: str,
        uio_images: dict[str, Path], dtk_deb: Path) -> None:
    """Debian's dpdk-kmods-dkms, built by dtk: igb_uio needs the in-tree uio, and the
    image ships linux-firmware-style links. Loaded at boot by dtk's own modprobe (its
    journal shows the insmod of uio: nothing had loaded it), on two boots in a row (the
    firmware links copied again), then after the next kernel's package is installed."""
    tar = node_vm.base_tar(archive, kernel_61, node_vm.package_depends(dtk_deb))
    node = node_vm.make_node(tar, kernel_61, dtk_deb, work)
    disk = work / "images"
    disk.mkdir()
    for kernel, archive_file in uio_images.items():
        shutil.copy(archive_file, disk / f"igb-uio-{normalize(kernel)}.tar")
    shutil.copytree(disk, node.rootfs / "mnt/images", dirs_exist_ok=True)  # for the hook
    (node.rootfs / "etc/dtk-sentinel").write_text("the host's own\n")
    module = work / "igb-uio.yaml"
    module.write_text(UIO_MODULE)
    node.dtk("node", "add", "-f", str(module), "--kernel", kernel_61, "--kernel", kernel_612)
    node_vm.then(node, FIRMWARE_REPORT)
    node_vm.disks(node, disk)
    for boot in (1, 2):  # the same root disk: the second boot starts from the first's state
        report = node_vm.boot(node, kernel_61)
        where = f"boot {boot}: console:\n{report.console[-3000:]}\nreport: {report.facts} " \
                f"{report.sections}"
        assert report.facts.get("kernel") == kernel_61, where
        assert report.facts["unit"] == "active 0", where
        modules = report.facts["modules"].split()
        assert {"igb_uio", "uio"} <= set(modules), where
        (status,) = json.loads(report.sections["status"])
        # modprobe -v's own words: it inserted uio itself, so nothing had loaded it.
        assert "/host/kernel/drivers/uio/uio.ko" in status["loaded"]["output"], where
        firmware = firmware_seen(report)
        assert firmware.get("/var/lib/firmware/vendor/dev.bin") == "l -> dev-1.0.bin", where
        assert firmware.get("/var/lib/firmware/current") == "l -> vendor", where
        assert "/var/lib/firmware/vendor/up" not in firmware, where
        assert "the host's own" in report.sections["then"], where
    (entry,) = [e for e in archive.kernels() if e.release == kernel_612]
    (deb,) = archive.index.download([entry.image_package], work / "debs")
    shutil.copy(deb, node.rootfs / "tmp/kernel.deb")
    dpkg = chroot_dpkg(node.rootfs, "-i", "/tmp/kernel.deb")
    assert f"dtk node: igb-uio for {kernel_612}: ready" in dpkg.stdout + dpkg.stderr, dpkg
    (node.rootfs / "tmp/kernel.deb").unlink()
    node_vm.disks(node, disk)
    report = node_vm.boot(node, kernel_612)
    where = f"console:\n{report.console[-3000:]}\nreport: {report.facts} {report.sections}"
    assert report.facts.get("kernel") == kernel_612, where
    assert report.facts["unit"] == "active 0", where
    assert {"igb_uio", "uio"} <= set(report.facts["modules"].split()), where
    (status,) = json.loads(report.sections["status"])
    assert "/host/kernel/drivers/uio/uio.ko" in status["loaded"]["output"], where
