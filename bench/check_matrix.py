"""Benchmark: `dtk check` over a modules x kernels matrix, against booting each kernel.

Kernels: ten real Debian kernels (the five newest 6.1 ABIs, 6.1 rt and cloud,
6.12 standard, rt and cloud). Their facts come from the `linux-headers-<K>`
packages alone (Module.symvers + .config, ~2 MB each) rather than full
toolkits (1-2 GB each), through the same `--kernel-root` code path a user
has. Modules: 12 real in-tree modules each from the newest 6.1 and 6.12
standard kernels' image packages, so the matrix holds both loads and refusals.

The alternative is booting each kernel in a VM and loading the module: that is
measured here too, on this machine, as `dtk vmtest` does it (bench/vm_boot.py):
the newest 6.1 kernel loading its own `dummy` module, median of three boots after
an untimed one that warms the caches.

Run: .venv/bin/python bench/check_matrix.py
"""

from __future__ import annotations

import collections
import statistics
import tempfile
import time
from pathlib import Path

from vm_boot import boot, dummy_image  # bench/vm_boot.py, beside this script

from dtk import paths, rootfs
from dtk import run as runner
from dtk.distro import KernelEntry
from dtk.distro.select import open_archive
from dtk.engine import buildah
from dtk.kernel import facts
from dtk.kmod import check as chk
from dtk.kmod import elf

MODULES = ("lib/crc7", "drivers/usb/storage/usb-storage", "fs/ext4/ext4", "net/sctp/sctp",
           "drivers/net/wireguard/wireguard", "drivers/scsi/sg", "fs/fuse/fuse",
           "drivers/usb/storage/uas", "net/bridge/bridge", "drivers/md/dm-crypt",
           "drivers/net/tun", "sound/core/snd")


def pick_kernels() -> list[KernelEntry]:
    catalog = [e for e in open_archive().kernels() if e.has_headers]
    std61 = [e for e in catalog if e.line == "6.1" and e.flavour == "standard"][:5]
    newest: dict[tuple[str, str], KernelEntry] = {}
    for e in catalog:
        newest.setdefault((e.line, e.flavour), e)
    others = [("6.1", "rt"), ("6.1", "cloud"), ("6.12", "standard"), ("6.12", "rt"),
              ("6.12", "cloud")]
    return [*std61, *(newest[key] for key in others)]


def unpack(packages: list[str], dest: Path) -> None:
    """Download and unpack packages once; later runs reuse the tree."""
    todo = [p for p in packages if not (dest / ".done" / p).exists()]
    if not todo:
        return
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for deb in open_archive().index.download(todo, Path(tmp)):
            runner.run(["dpkg-deb", "-x", str(deb), str(dest)], timeout=600)
    (dest / ".done").mkdir(parents=True, exist_ok=True)
    for p in todo:
        (dest / ".done" / p).touch()


def load_modules(root: Path, release: str) -> list[elf.KernelModule]:
    found = {inner.split("/kernel/", 1)[1].split(".ko")[0]: host for inner, host in
             rootfs.walk_files(root, f"/lib/modules/{release}/kernel")}
    return [elf.read_module(found[m]) for m in MODULES if m in found]


def measure_boot(release: str) -> tuple[float, str]:
    """Seconds for one `dtk vmtest` of `release` loading a module, and the accelerator."""
    with tempfile.TemporaryDirectory(prefix="dtk-bench-") as tmp:
        image = dummy_image([release], Path(tmp))
        try:
            results, _wall = boot(image, [release], "dummy")  # warms every cache
            walls = [boot(image, [release], "dummy")[1] for _ in range(3)]
        finally:
            buildah.remove_image(image)
    return statistics.median(walls), results[0].accel


def main() -> None:
    entries = pick_kernels()
    kernels = [e.release for e in entries]
    root = paths.cache_dir() / "bench" / "check-matrix"
    module_kernels = [kernels[0], kernels[7]]
    # The image package by its archive name: 6.12's modules are in '-unsigned' ones.
    unpack([f"linux-headers-{k}" for k in kernels] +
           [entries[0].image_package, entries[7].image_package], root)

    cold: list[float] = []
    for k in kernels:
        start = time.perf_counter()
        facts.from_root(root, k, str(root))
        cold.append(time.perf_counter() - start)
    for k in kernels:  # populate the cache, then time cache hits
        facts.for_directory(root, k)
    warm: list[float] = []
    table = []
    for k in kernels:
        start = time.perf_counter()
        table.append(facts.for_directory(root, k))
        warm.append(time.perf_counter() - start)

    start = time.perf_counter()
    modules = [m for k in module_kernels for m in load_modules(root, k)]
    read_s = time.perf_counter() - start

    rounds = 20
    start = time.perf_counter()
    for _ in range(rounds):
        verdicts = [chk.check_module(m, kf, {}) for m in modules for kf in table]
    check_s = (time.perf_counter() - start) / rounds
    cells = len(modules) * len(table)

    print(f"matrix: {len(modules)} modules x {len(table)} kernels = {cells} cells\n")
    summary: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for v in verdicts:
        summary[v.kernel]["loads" if v.loads else
                          "refused:" + ",".join(sorted({f.code for f in v.refusals}))] += 1
    print(f"{'KERNEL':28} RESULT")
    for k in kernels:
        print(f"{k:28} " + "  ".join(f"{n} {what}" for what, n in sorted(summary[k].items())))
    end_to_end = sum(warm) + read_s + check_s
    print(f"\n{'step':44} {'time':>10}")
    print(f"{'kernel facts, cold (parse symvers+config)':44} "
          f"{statistics.mean(cold) * 1000:8.0f} ms/kernel")
    print(f"{'kernel facts, cached':44} {statistics.mean(warm) * 1000:8.1f} ms/kernel")
    print(f"{'read modules (ELF, once)':44} {read_s / len(modules) * 1000:8.1f} ms/module")
    print(f"{'check one cell':44} {check_s / cells * 1e6:8.0f} us/cell")
    print(f"{'checks per second':44} {cells / check_s:10.0f}")
    print(f"{'whole matrix, cached facts (end to end)':44} {end_to_end:8.2f} s")
    boot_s, accel = measure_boot(kernels[0])
    boots_per_kernel = len(table) * boot_s
    boots_per_cell = cells * boot_s
    print(f"\none boot + load, measured ({kernels[0]}, {accel}): {boot_s:.1f} s")
    print(f"booting instead: {len(table)} boots (all modules per boot) = "
          f"{boots_per_kernel:.0f} s; one boot per cell = {boots_per_cell:.0f} s")
    print(f"ratio: check is {boots_per_kernel / end_to_end:.0f}x faster than the fewest boots, "
          f"{boots_per_cell / end_to_end:.0f}x faster than a boot per cell "
          f"(per cell: {boot_s / (check_s / cells):.0f}x)")


if __name__ == "__main__":
    main()
