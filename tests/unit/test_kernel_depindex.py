"""modules.dep.bin read as libkmod reads it, on an index kmod's depmod wrote."""

from __future__ import annotations

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
    index = image.depmod_index(_root(tmp_path, "modules.dep.bin"), image.MODULES_DIR, K)
    assert index == chk.DepIndex(frozenset({"crc7", "nls_ucs2_utils"}))
    assert chk.check_module(CRC7, kernel(K), {}, depmod=index).loads
