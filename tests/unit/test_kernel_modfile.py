"""Module names, .modinfo reading (capped decompression) and modules.dep closures."""

from __future__ import annotations

import lzma
import struct

import pytest

from dtk.errors import DtkError
from dtk.kernel import modfile, modules_dep


def module_elf(modinfo: bytes) -> bytes:
    """A minimal relocatable ELF64 with a .modinfo and a section name table."""
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    data_off = 64
    shstr_off = data_off + len(modinfo)
    sh_off = (shstr_off + len(shstrtab) + 7) & ~7
    header = bytearray(64)
    header[0:4] = b"\x7fELF"
    header[4], header[5], header[6] = 2, 1, 1
    struct.pack_into("<HHI", header, 16, 1, 62, 1)  # ET_REL, x86-64
    struct.pack_into("<Q", header, 0x28, sh_off)
    struct.pack_into("<HHHHHH", header, 0x34, 64, 0, 0, 64, 3, 2)
    null = bytes(64)
    info = struct.pack("<IIQQQQIIQQ", 1, 1, 2, 0, data_off, len(modinfo), 0, 0, 1, 0)
    names = struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0)
    body = bytes(header) + modinfo + shstrtab
    return body + b"\0" * (sh_off - len(body)) + null + info + names


INFO = b"license=GPL\0depends=videodev,mc\0name=v4l2loopback\0parm=devices:int\0"


def test_modinfo_and_depends() -> None:
    info = modfile.peek(module_elf(INFO), "v4l2loopback.ko")
    assert info.first("license") == "GPL"
    assert info.machine == "x86_64"
    assert info.depends == ["videodev", "mc"]


def test_compressed_module() -> None:
    data = lzma.compress(module_elf(b"depends=snd-pcm\0"))
    assert modfile.peek(data, "x.ko.xz").depends == ["snd_pcm"]


def test_empty_depends() -> None:
    assert modfile.peek(module_elf(b"depends=\0"), "a.ko").depends == []


def test_not_a_module() -> None:
    with pytest.raises(DtkError, match="not a readable kernel module"):
        modfile.peek(b"\x7fELF garbage", "bad.ko")


def test_decompression_is_capped() -> None:
    """A module that inflates past the cap is refused before it fills memory."""
    bomb = lzma.compress(bytes((2 << 20) + 1))
    assert modfile.uncompress(bomb, "ok.ko.xz", limit=3 << 20)[1] == "xz"
    with pytest.raises(DtkError, match="decompresses to more than 2 MiB"):
        modfile.uncompress(bomb, "bomb.ko.xz", limit=2 << 20)


@pytest.mark.parametrize(("path", "name"), [
    ("kernel/drivers/media/v4l2-core/videodev.ko", "videodev"),
    ("updates/dkms/v4l2loopback.ko.xz", "v4l2loopback"),
    ("kernel/sound/core/snd-pcm.ko.zst", "snd_pcm"),
])
def test_module_name(path: str, name: str) -> None:
    assert modfile.module_name(path) == name
    assert modfile.is_module(path)


DEP = """kernel/drivers/media/mc/mc.ko:
kernel/drivers/media/v4l2-core/videodev.ko: kernel/drivers/media/mc/mc.ko
kernel/drivers/media/v4l2-core/v4l2-mem2mem.ko: \
kernel/drivers/media/v4l2-core/videodev.ko kernel/drivers/media/mc/mc.ko
kernel/drivers/net/dummy.ko:
"""


def test_closure_puts_dependencies_first_and_skips_unknown_names() -> None:
    dep = modules_dep.parse_modules_dep(DEP)
    assert dep.closure(["v4l2_mem2mem", "dummy", "built_in_thing"]) == [
        "kernel/drivers/media/mc/mc.ko",
        "kernel/drivers/media/v4l2-core/videodev.ko",
        "kernel/drivers/media/v4l2-core/v4l2-mem2mem.ko",
        "kernel/drivers/net/dummy.ko",
    ]
    assert dep.missing(["videodev", "nope"]) == ["nope"]


def test_builtin_names() -> None:
    assert modules_dep.builtin_names("kernel/fs/ext4/ext4.ko\nkernel/lib/crc-t10dif.ko\n") == {
        "ext4", "crc_t10dif"}
