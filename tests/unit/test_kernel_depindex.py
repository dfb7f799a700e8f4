"""modules.dep.bin read as libkmod reads it, on an index kmod's depmod wrote."""

from __future__ import annotations

import dataclasses
import shutil
import struct
from pathlib import Path

import pytest

from dtk.kernel import depindex
from dtk.kmod import check as chk
from dtk.kmod import elf, image

from .test_kmod_check import kernel

DATA = Path(__file__).parent.parent / "data" / "kmod"
KMOD = DATA / "depmod-kmod"
CRC7 = elf.read_module(DATA / "crc7-6.1.0-56-amd64.ko")
K = "6.1.0-56-amd64"


def test_reads_the_keys_and_lines_kmod_depmod_wrote() -> None:
    index = depindex.read_index((KMOD / "modules.dep.bin").read_bytes())
    assert index == {"crc7": ["extra/crc7.ko:"],
                     "nls_ucs2_utils": ["extra/nls_ucs2_utils.ko.xz:"]}
    text = {line.split(":")[0] for line in (KMOD / "modules.dep").read_text().splitlines()}
    assert {v[0].split(":")[0] for v in index.values()} == text


@pytest.mark.parametrize("damage", [
    lambda b: b[:8], lambda b: b"\0" + b[1:], lambda b: b[:4] + struct.pack(">I", 1 << 16) + b[8:],
    lambda b: b[:-6],
])
def test_a_damaged_index_is_an_error_not_a_crash(damage: object) -> None:
    data = (KMOD / "modules.dep.bin").read_bytes()
    with pytest.raises(depindex.DepIndexError):
        depindex.read_index(damage(data))  # type: ignore[operator]


def _root(tmp_path: Path, *files: str) -> Path:
    top = tmp_path / "opt" / "lib" / "modules" / K
    top.mkdir(parents=True)
    for name in files:
        shutil.copyfile(KMOD / name, top / name)
    return tmp_path


def test_an_image_with_only_the_text_index_is_refused_naming_kmods_depmod(
        tmp_path: Path) -> None:
    """busybox's depmod writes modules.dep only; kmod's modprobe -d never reads it."""
    index = image.depmod_index(_root(tmp_path, "modules.dep"), image.MODULES_DIR, K)
    assert index.text_only and not index.names
    verdict = chk.check_module(CRC7, kernel(K), {}, depmod=index)
    assert [f.code for f in verdict.refusals] == ["depmod"]
    message = verdict.refusals[0].message
    assert f"Module crc7 not found in directory /opt/lib/modules/{K}" in message
    assert "not busybox's" in message


def test_names_come_from_modules_dep_bin(tmp_path: Path) -> None:
    root = _root(tmp_path, "modules.dep.bin")
    (root / "opt/lib/modules" / K / "extra").mkdir()
    shutil.copyfile(DATA / "crc7-6.1.0-56-amd64.ko", root / "opt/lib/modules" / K / "extra/crc7.ko")
    index = image.depmod_index(root, image.MODULES_DIR, K)
    assert index.names == frozenset({"crc7", "nls_ucs2_utils"})
    assert index.entries["crc7"] == ("extra/crc7.ko", ())
    assert index.resolved["extra/crc7.ko"] == ("image", "")
    assert index.resolved["extra/nls_ucs2_utils.ko.xz"][0] == "missing"
    assert chk.check_module(CRC7, kernel(K), {}, depmod=index).loads


def _tree(tmp_path: Path) -> Path:
    """An image's kernel directory in both of KMM's layouts for in-tree dependencies:
    upstream links `host` to /host/lib/modules/K (d8e8410), the midstream to
    /lib/modules/K (61821fde); and links no worker can follow."""
    top = tmp_path / "opt/lib/modules" / K
    (top / "extra").mkdir(parents=True)
    (top / "extra/own.ko").write_bytes(b"\x7fELF")
    (top / "host").symlink_to(f"/host/lib/modules/{K}")
    (top / "mid").symlink_to(f"/lib/modules/{K}")
    (top / "other").symlink_to("/lib/modules/6.1.0-1-amd64")
    (top / "etc").symlink_to("/etc")
    (top / "rel").symlink_to("extra")
    (top / "up").symlink_to("../..")
    return tmp_path


@pytest.mark.parametrize(("rel", "where"), [
    ("extra/own.ko", ("image", "")),
    ("rel/own.ko", ("image", "")),
    ("host/kernel/drivers/media/v4l2-core/videodev.ko",
     ("node", "kernel/drivers/media/v4l2-core/videodev.ko")),
    ("mid/kernel/lib/crc7.ko", ("node", "kernel/lib/crc7.ko")),
    ("extra/gone.ko", ("missing", f"/opt/lib/modules/{K}/extra/gone.ko does not exist")),
    ("other/kernel/lib/crc7.ko", ("missing", "links to /lib/modules/6.1.0-1-amd64, outside")),
    ("etc/passwd", ("missing", "links to /etc, outside the copied tree")),
    ("up/x.ko", ("missing", "climbs out of the kernel directory")),
])
def test_recorded_paths_resolve_as_the_worker_sees_them(tmp_path: Path, rel: str,
                                                        where: tuple[str, str]) -> None:
    """The worker copies the kernel directory (links kept) and mounts the node's modules
    at /lib/modules and /host/lib/modules; nothing else of the image is there."""
    kind, detail = image.worker_path(_tree(tmp_path), f"/opt/lib/modules/{K}", rel, K)
    assert kind == where[0]
    assert where[1] in detail if kind == "missing" else detail == where[1]


def _needs(dep: str) -> elf.KernelModule:
    return dataclasses.replace(CRC7, modinfo=(
        *((k, v) for k, v in CRC7.modinfo if k != "depends"), ("depends", dep)))


def test_check_follows_the_recorded_paths() -> None:
    """A dependency's name in modules.dep.bin is not enough: its recorded path must open
    where the worker runs modprobe (before, the name alone counted as present)."""
    facts_k = dataclasses.replace(kernel(K), modules=frozenset({"crc7", "usbcore"}),
                                  module_paths=frozenset({"kernel/drivers/usb/core/usbcore.ko"}))
    needy = _needs("usbcore")
    entries = {"crc7": ("extra/crc7.ko", ("host/kernel/drivers/usb/core/usbcore.ko",)),
               "usbcore": ("host/kernel/drivers/usb/core/usbcore.ko", ())}

    def index(where: tuple[str, str]) -> chk.DepIndex:
        return chk.DepIndex(frozenset({"crc7", "usbcore"}), entries=entries, resolved={
            "extra/crc7.ko": ("image", ""), "host/kernel/drivers/usb/core/usbcore.ko": where})

    good = index(("node", "kernel/drivers/usb/core/usbcore.ko"))
    assert chk.check_module(needy, facts_k, {}, depmod=good).loads
    dangling = chk.check_module(needy, facts_k, {}, depmod=index(
        ("missing", "/opt/lib/modules/K/host links to /usr/lib/modules/K, outside")))
    assert [f.code for f in dangling.refusals] == ["depmod-path"]
    assert "records host/kernel/drivers/usb/core/usbcore.ko for crc7, which does not " \
        "resolve" in dangling.refusals[0].message
    moved = chk.check_module(needy, facts_k, {}, depmod=index(
        ("node", "kernel/drivers/usb/usbcore.ko")))
    assert [f.code for f in moved.refusals] == ["depmod-path"]
    assert "which has no kernel/drivers/usb/usbcore.ko" in moved.refusals[0].message
