"""`dtk vmtest` against real Debian kernels under real qemu.

Driver images are built by the product itself (`dtk build`, into a unique
repository removed afterwards): the example driver for the newest 6.1 kernel,
its RT sibling and the newest 6.12; misbehaving modules (tests/data/vm); and
Debian's v4l2loopback-dkms. Kernels of one test boot in parallel.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dtk.distro.debian import DebianArchive
from dtk.engine import buildah
from dtk.kernel.verdict import Verdict
from dtk.kmod import check as chk
from dtk.kmod import image as kimage
from dtk.toolkit import locate
from dtk.toolkit.images import ToolkitImage
from dtk.vm import kernels as vmkernels
from dtk.vm.guest import GuestConfig
from dtk.vm.vmtest import VmResult, VmTestSpec, vmtest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "dtk-example" / "Containerfile"
MISBEHAVE = ROOT / "tests" / "data" / "vm" / "misbehave" / "Containerfile"
GREETING = "greetings from the vm test"


@dataclass(frozen=True)
class Images:
    repo: str  # localhost/dtk-vmtest-<id>

    def template(self, module: str) -> str:
        return f"{self.repo}/{module}:${{KERNEL_FULL_VERSION}}"


def dtk(*args: str, env: dict[str, str] | None = None,
        timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dtk", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


def build(images: Images, *args: str) -> None:
    proc = dtk("build", *args, "--image", images.template("${MOD_NAME}"), "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def images(toolkit_61: ToolkitImage, toolkit_612: ToolkitImage,
           kernel_612: str) -> Iterator[Images]:
    imgs = Images(f"localhost/dtk-vmtest-{uuid.uuid4().hex[:8]}")
    try:
        build(imgs, "-f", str(EXAMPLE), "--mod-name", "example",
              *(arg for k in (*toolkit_61.kernels, kernel_612) for arg in ("--kernel", k)))
        build(imgs, "-f", str(MISBEHAVE), "--mod-name", "misbehave",
              "--kernel", toolkit_61.kernel)
        build(imgs, "--dkms", "v4l2loopback-dkms", "--kernel", toolkit_61.kernel)
        yield imgs
    finally:
        for row in buildah.images():
            for name in row.get("names") or ():
                if name.startswith(imgs.repo):
                    buildah.remove_image(name)


def run_vm(image: str, kernels: tuple[str, ...], *, timeout_s: float = 60,
           **options: Any) -> dict[str, VmResult]:
    guest_options = {k: options.pop(k) for k in list(options) if k in GuestConfig.__annotations__}
    config = GuestConfig(**{"module": "", **guest_options})
    spec = VmTestSpec(image, kernels, config, timeout_s=timeout_s, **options)
    return {r.kernel: r for r in vmtest(spec)}


def qemu_running(marker: str) -> list[int]:
    """qemu processes whose command line mentions `marker` (a path of this test),
    or, with marker "", those started by this process."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            status = (proc / "status").read_text()
        except OSError:
            continue
        ours = f"PPid:\t{os.getpid()}\n" in status if not marker else marker in cmdline
        if "qemu-system" in cmdline and ours:
            found.append(int(proc.name))
    return found


def test_example_loads_on_61_rt_and_612(images: Images, kernel_61: str, kernel_61_rt: str,
                                        kernel_612: str) -> None:
    kernels = (kernel_61, kernel_61_rt, kernel_612)
    results = run_vm(images.template("example"), kernels,
                     parameters=(f'greeting="{GREETING}"',), check="cat /dev/dtk_example")
    for release in kernels:
        r = results[release]
        assert r.verdict is Verdict.LOADED, (release, r.reason, r.log)
        assert f"{GREETING} (read 1)" in r.sections["check"]
        assert r.module == "dtk_example"
        assert "dtk_example: loaded" in r.sections["dmesg"] or \
            "unloaded after 1 reads" in r.sections["dmesg"]
        assert r.accel in ("tcg", "kvm") and 0 < r.guest_boot_s < r.seconds


def test_module_built_for_another_kernel_is_refused_with_the_kernels_reason(
        images: Images, kernel_61: str, kernel_61_rt: str, kernel_612: str) -> None:
    # The cloud flavour's bzImage carries an lz4 payload (xz and zstd elsewhere).
    cloud = kernel_61.replace("-amd64", "-cloud-amd64")
    kernels = (kernel_61_rt, kernel_612, cloud)
    results = run_vm(images.template("example"), kernels, built_for=kernel_61)
    for release in kernels:
        r = results[release]
        assert r.verdict is Verdict.REFUSED, (release, r.reason)
        # The kernel's own words: 6.1 compares symbol CRCs first; 6.12 already
        # refuses the module's struct module layout.
        kernel_says = ("dtk_example: disagrees about version of symbol module_layout"
                       if release.startswith("6.1.") else
                       "module dtk_example: .gnu.linkonce.this_module section size must "
                       "match the kernel's built struct module size")
        assert r.reason.startswith(kernel_says), r.reason
        assert r.reason.endswith("could not insert 'dtk_example': Exec format error")
        assert r.log and Path(r.log).is_file()


def test_kernel_without_a_toolkit_boots_from_its_package(images: Images, kernel_61: str,
                                                        archive: DebianArchive) -> None:
    """The upgrade question for a kernel nobody built a toolkit for: its image
    package comes from the archive, and the kernel's answer agrees with
    `dtk check` (a neighbouring ABI may well accept the module: same CRCs)."""
    candidates = [e.release for e in archive.kernels()
                  if e.flavour == "standard" and e.line == "6.1" and e.release != kernel_61
                  and e.has_headers  # dtk check needs its headers package
                  and vmkernels.find_toolkit_image(e.release) is None]
    assert candidates, "every 6.1 kernel has a toolkit here; none to boot from a package"
    release = candidates[-1]  # the oldest: the likeliest to differ
    image = images.template("example").replace("${KERNEL_FULL_VERSION}", kernel_61)
    r = run_vm(image, (release,), built_for=kernel_61)[release]
    assert r.kernel_origin.startswith("package linux-image-"), r.kernel_origin
    (items,) = kimage.read_modules(image).values()
    predicted = chk.check_module(items[0].module, locate.kernel_facts(release), {}).loads
    assert r.verdict is (Verdict.LOADED if predicted else Verdict.REFUSED), r.reason
    if not predicted:
        assert "dtk_example: disagrees about version of symbol" in r.reason


def test_unsigned_module_is_refused_under_sig_enforce(images: Images, kernel_61: str) -> None:
    r = run_vm(images.template("example"), (kernel_61,), sig_enforce=True)[kernel_61]
    assert r.verdict is Verdict.REFUSED
    assert "Loading of unsigned module is rejected" in r.reason
    assert "Key was rejected by service" in r.reason


def copy_module(image: str, inner: str, dest: Path) -> None:
    """Copy one file out of an image (toolkit or driver) into `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with buildah.working_container(image) as ctr, ctr.mounted() as root:
        dest.write_bytes((root / inner.lstrip("/")).read_bytes())


def scratch_image(opt: Path, release: str, *, base: str = "scratch",
                  extra: tuple[tuple[Path, str], ...] = ()) -> str:
    """An image with `opt` (depmod'ed for `release`) at /opt, plus `extra` copies."""
    if any(opt.rglob("*.ko*")):
        subprocess.run(["depmod", "-b", str(opt), release], check=True, capture_output=True)
    name = f"localhost/dtk-vmtest-{uuid.uuid4().hex[:8]}/composed:latest"
    with buildah.working_container(base) as ctr:
        if any(opt.iterdir()):
            ctr.copy_in(opt, "/opt")
        for source, dest in extra:
            ctr.copy_in(source, dest)
        ctr.commit(name)
    return name


def test_debian_signed_module_loads_under_sig_enforce(tmp_path: Path, kernel_61: str,
                                                      toolkit_61: ToolkitImage) -> None:
    """The positive control: enforcement refuses what is unsigned, not everything."""
    opt = tmp_path / "opt"
    copy_module(toolkit_61.name, f"/lib/modules/{kernel_61}/kernel/drivers/net/dummy.ko",
                opt / "lib" / "modules" / kernel_61 / "extra" / "dummy.ko")
    name = scratch_image(opt, kernel_61)
    try:
        r = run_vm(name, (kernel_61,), sig_enforce=True, parameters=("numdummies=1",),
                   check="ip link show dummy0")[kernel_61]
        assert r.verdict is Verdict.LOADED, r.reason
        assert "dummy0" in r.sections["check"]
    finally:
        buildah.remove_image(name)


def test_loading_order_becomes_softdeps_and_unload_takes_them_all(
        images: Images, tmp_path: Path, kernel_61: str, toolkit_61: ToolkitImage) -> None:
    extra = tmp_path / "opt" / "lib" / "modules" / kernel_61 / "extra"
    example = images.template("example").replace("${KERNEL_FULL_VERSION}", kernel_61)
    copy_module(example, f"/opt/lib/modules/{kernel_61}/extra/dtk_example.ko",
                extra / "dtk_example.ko")
    copy_module(toolkit_61.name, f"/lib/modules/{kernel_61}/kernel/drivers/net/dummy.ko",
                extra / "dummy.ko")
    name = scratch_image(tmp_path / "opt", kernel_61)
    try:
        r = run_vm(name, (kernel_61,), loading_order=("dtk_example", "dummy"),
                   check="cut -d' ' -f1 /proc/modules")[kernel_61]
        assert r.verdict is Verdict.LOADED, r.reason
        assert r.module == "dtk_example"
        assert sorted(r.sections["check"].split()) == ["dtk_example", "dummy"]
        assert "rmmod dtk_example" in r.sections["unload"]
        assert "rmmod dummy" in r.sections["unload"]
    finally:
        buildah.remove_image(name)


def test_in_tree_modules_to_remove_are_removed_first(images: Images, kernel_61: str) -> None:
    """inTreeModulesToRemove: the node has them loaded; the worker removes them
    before loading its own module (and does not put them back)."""
    r = run_vm(images.template("example"), (kernel_61,), in_tree_to_remove=("dummy",),
               cpus=2, check="grep -c ^processor /proc/cpuinfo; "
                             "grep -q '^dummy ' /proc/modules || echo dummy-gone")[kernel_61]
    assert r.verdict is Verdict.LOADED, r.reason
    assert "rmmod dummy" in r.sections["remove"]
    assert r.sections["check"].split() == ["2", "dummy-gone"]


def test_firmware_is_copied_and_its_path_set(images: Images, tmp_path: Path,
                                             kernel_61: str) -> None:
    firmware = tmp_path / "firmware" / "dtk"
    firmware.mkdir(parents=True)
    (firmware / "test.bin").write_text("firmware bytes\n")
    (tmp_path / "opt").mkdir()
    example = images.template("example").replace("${KERNEL_FULL_VERSION}", kernel_61)
    name = scratch_image(tmp_path / "opt", kernel_61, base=example,
                         extra=((tmp_path / "firmware", "/firmware"),))
    try:
        r = run_vm(name, (kernel_61,), firmware_path="/firmware",
                   check="cat /sys/module/firmware_class/parameters/path "
                         "/var/lib/firmware/dtk/test.bin")[kernel_61]
        assert r.verdict is Verdict.LOADED, r.reason
        assert r.sections["check"].split("\n") == ["/var/lib/firmware", "firmware bytes"]
    finally:
        buildah.remove_image(name)


@pytest.mark.parametrize(("module", "verdict", "reason"), [
    ("dtk_hang", Verdict.TIMED_OUT, "load did not finish in time — stack: msleep"),
    ("dtk_panic", Verdict.CRASHED,
     "kernel panic during load — Kernel panic - not syncing: dtk_panic: panicking on purpose"),
    ("dtk_oops", Verdict.CRASHED, "the kernel oopsed during load — BUG: kernel NULL pointer"),
])
def test_misbehaving_modules_end_with_a_clear_verdict(images: Images, kernel_61: str,
                                                      module: str, verdict: Verdict,
                                                      reason: str) -> None:
    start = time.monotonic()
    r = run_vm(images.template("misbehave"), (kernel_61,), module=module,
               timeout_s=25)[kernel_61]
    assert r.verdict is verdict, r.reason
    assert r.reason.startswith(reason), r.reason
    assert time.monotonic() - start < 60
    assert not qemu_running("")
    assert Path(r.log).is_file()


def test_v4l2loopback_from_debian_creates_a_video_device(images: Images,
                                                         kernel_61: str) -> None:
    """Loaded exactly as KMM's worker does (`modprobe -d /opt`, no preloading): the
    image's modules.dep reaches the in-tree videodev through /opt/…/host."""
    template = images.template("v4l2loopback")
    r = run_vm(template, (kernel_61,), parameters=("devices=2",),
               check="ls /dev/video*")[kernel_61]
    assert r.verdict is Verdict.LOADED, r.reason
    assert r.sections["check"].split() == ["/dev/video0", "/dev/video1"]
    # --preload-in-tree (for images built without the host link) must not get in the way.
    pre = run_vm(template, (kernel_61,), preload_in_tree=True)[kernel_61]
    assert pre.verdict is Verdict.LOADED, pre.reason


def test_cli_image_without_modules_for_the_kernel(images: Images, kernel_61: str,
                                                  kernel_612: str, tmp_path: Path) -> None:
    env = dict(os.environ, DTK_STATE_DIR=str(tmp_path))
    image = images.template("misbehave").replace("${KERNEL_FULL_VERSION}", kernel_61)
    proc = dtk("vmtest", image, "--kernel", kernel_612, "--module", "dtk_oops", "--json",
               env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr  # an input error, said before anything boots
    error = json.loads(proc.stdout)["error"]
    assert error["message"] == (f"nothing to load:\n  {kernel_612}: the image has no "
                                f"/opt/lib/modules/{kernel_612} (it has modules for: "
                                f"{kernel_61})")
    assert "booting" not in proc.stderr
    proc = dtk("vmtest", image, "--kernel", kernel_61, "--module", "nosuch", env=env)
    assert proc.returncode == 2
    assert "the image has no module nosuch (it has dtk_hang, dtk_oops, dtk_panic)" \
        in proc.stderr and "booting" not in proc.stderr
    listing = subprocess.run(["buildah", "containers", "--json"], capture_output=True,
                             text=True, check=True).stdout
    # With no containers at all (a fresh machine), buildah prints "null".
    assert not [c for c in json.loads(listing) or [] if c.get("imagename") == image]


def test_cli_unknown_kernel_and_missing_image(tmp_path: Path, images: Images,
                                              kernel_61: str) -> None:
    env = dict(os.environ, DTK_STATE_DIR=str(tmp_path))
    proc = dtk("vmtest", images.template("example"), "--kernel", "6.1.0-99-amd64",
               env=env, timeout=300)
    assert proc.returncode == 2
    assert "kernel 6.1.0-99-amd64 is not in the configured archive" in proc.stderr
    assert "booting" not in proc.stderr
    proc = dtk("vmtest", "localhost/no-such-image:1", "--kernel", kernel_61, env=env)
    assert proc.returncode == 2
    assert "image localhost/no-such-image:1 is not in local container storage" in proc.stderr
    proc = dtk("vmtest", images.template("example"), "--kernel", kernel_61,
               "--param", "greeting", env=env)
    assert proc.returncode == 2
    assert "'greeting' is not KEY=VALUE" in proc.stderr and "booting" not in proc.stderr
    proc = dtk("vmtest", "localhost/no-such-image:1", "--kernel", "not-a-release", env=env)
    assert proc.returncode == 2
    assert "is not a kernel release dtk understands" in proc.stderr


def test_ctrl_c_leaves_no_qemu_behind(images: Images, kernel_61: str, tmp_path: Path) -> None:
    # dtk's private work directory (the initrd qemu boots) lands under TMPDIR.
    env = dict(os.environ, DTK_STATE_DIR=str(tmp_path), TMPDIR=str(tmp_path))
    image = images.template("misbehave")
    proc = subprocess.Popen([sys.executable, "-m", "dtk", "vmtest", image, "--kernel",
                             kernel_61, "--module", "dtk_hang", "--timeout", "300"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not qemu_running(str(tmp_path)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
            time.sleep(0.2)
        time.sleep(2)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted" in err
        assert not qemu_running(str(tmp_path))
    finally:
        if proc.poll() is None:
            proc.kill()
