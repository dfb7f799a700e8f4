"""Boot-to-result time per kernel, plain and through Secure Boot, and the speed-up of
booting kernels in parallel.

    .venv/bin/python bench/vm_boot.py [--rounds N] [--image IMAGE-TEMPLATE] [K ...]

Each kernel boots under qemu (TCG unless KVM passes dtk's probe), loads a real
module the way KMM's worker does and reports back: "boot-to-result" is qemu's
start to qemu's exit. Each round boots every kernel twice, one after the other:
the plain boot (`dtk vmtest`: qemu -kernel, entering the ELF vmlinux through PVH)
and the Secure Boot boot of the same kernel with the same module and initramfs
(`dtk vmtest --secure-boot`: OVMF, shim, GRUB, the package's signed vmlinuz).
The kernels then boot all at once (up to one per core, plain) and the wall time
is compared with the sum of the sequential runs. Caches are warmed by a first,
untimed round. With no arguments it uses the newest 6.1 kernel, its RT sibling
and the newest 6.12, and the in-tree `dummy` module from each kernel's own
package (no toolkit or build needed; signed by the kernel's build key, so it
loads under Secure Boot without a MOK).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from dtk import run as runner
from dtk.distro.query import query_kernels
from dtk.distro.select import open_archive
from dtk.engine import buildah
from dtk.vm import kernels as vmkernels
from dtk.vm.guest import GuestConfig
from dtk.vm.secureboot import SecureBootSpec
from dtk.vm.vmtest import VmResult, VmTestSpec, vmtest


def default_kernels() -> list[str]:
    """The newest 6.1 kernel and its RT sibling, and the newest 6.12: `--kernels`'s
    query language says it (dtk.distro.query)."""
    catalog = open_archive().kernels()
    return (query_kernels("6.1,standard,rt,latest", catalog)
            + query_kernels("6.12,standard,latest", catalog))


def dummy_image(releases: list[str], workdir: Path) -> str:
    """One image holding each kernel's own signed `dummy` module under /opt."""
    archive = open_archive()
    opt = workdir / "opt"
    for release in releases:
        source = vmkernels.find_source(release, lambda: archive)
        with vmkernels.opened(source, lambda: archive) as root:
            moddir = root / "lib" / "modules" / release / "kernel" / "drivers" / "net"
            ko = next(moddir.glob("dummy.ko*"))
            dest = opt / "lib" / "modules" / release / "extra"
            dest.mkdir(parents=True)
            (dest / ko.name).write_bytes(ko.read_bytes())
        runner.run(["depmod", "-b", str(opt), release], timeout=120)
    name = f"localhost/dtk-bench-{uuid.uuid4().hex[:8]}:dummy"
    with buildah.working_container("scratch") as ctr:
        ctr.copy_in(opt, "/opt")
        ctr.commit(name)
    return name


def boot(image: str, releases: list[str], module: str,
         secure: SecureBootSpec | None = None) -> tuple[list[VmResult], float]:
    config = GuestConfig(module=module, check="true")
    start = time.monotonic()
    results = vmtest(VmTestSpec(image, tuple(releases), config, timeout_s=120,
                                secure_boot=secure))
    wall = time.monotonic() - start
    bad = [r for r in results if not r.verdict.ok]
    if bad:
        sys.exit(f"{bad[0].kernel}: {bad[0].verdict.value}: {bad[0].reason}")
    return results, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("kernels", nargs="*")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image", default="", help="driver image (template) to load")
    parser.add_argument("--module", default="", help="module to load from --image")
    args = parser.parse_args()
    releases = args.kernels or default_kernels()
    with tempfile.TemporaryDirectory(prefix="dtk-bench-") as tmp:
        image = args.image or dummy_image(releases, Path(tmp))
        module = args.module or ("" if args.image else "dummy")
        try:
            run(image, releases, module, args.rounds)
        finally:
            if not args.image:
                buildah.remove_image(image)


def run(image: str, releases: list[str], module: str, rounds: int) -> None:
    secure = SecureBootSpec()
    boot(image, releases, module)  # warm every cache; not timed
    boot(image, releases, module, secure)
    per_kernel: dict[str, list[float]] = {r: [] for r in releases}
    guest: dict[str, list[float]] = {r: [] for r in releases}
    chain: dict[str, list[float]] = {r: [] for r in releases}
    sequential, parallel = [], []
    for _ in range(rounds):
        total = 0.0
        for release in releases:
            (result,), wall = boot(image, [release], module)
            per_kernel[release].append(result.seconds)
            guest[release].append(result.guest_boot_s)
            total += wall
            (chained,), _wall = boot(image, [release], module, secure)
            assert chained.boot["secure_boot"] == "on", chained.boot
            chain[release].append(chained.seconds)
        sequential.append(total)
        parallel.append(boot(image, releases, module)[1])
    accel = boot(image, releases[:1], module)[0][0].accel
    print(f"\nvm boot-to-result, {accel}, {os.cpu_count()} cores, median of {rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print(f"{'KERNEL':30} {'PLAIN s':>8} {'GUEST INIT AT s':>16} {'SECURE BOOT s':>14} "
          f"{'RATIO':>6}")
    for release in releases:
        plain, through = statistics.median(per_kernel[release]), statistics.median(chain[release])
        print(f"{release:30} {plain:8.2f} {statistics.median(guest[release]):16.2f} "
              f"{through:14.2f} {through / plain:5.1f}x")
    seq, par = statistics.median(sequential), statistics.median(parallel)
    print(f"\n{len(releases)} kernels one after another (dtk vmtest wall): {seq:6.1f} s")
    print(f"{len(releases)} kernels in parallel (one dtk vmtest):        {par:6.1f} s")
    print(f"parallel speed-up: {seq / par:.2f}x")


if __name__ == "__main__":
    main()
