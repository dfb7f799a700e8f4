"""bzImage → vmlinux extraction on synthetic images built to the boot protocol."""

from __future__ import annotations

import contextlib
import gzip
import lzma
import struct
from collections.abc import Callable

import lz4.block
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from dtk.errors import DtkError
from dtk.kernel import bzimage


def elf(with_pvh: bool = True) -> bytes:
    """A minimal x86-64 ELF executable with one PT_NOTE (Xen PHYS32_ENTRY if asked)."""
    name = b"Xen\0"
    note = struct.pack("<III", len(name), 4, 18 if with_pvh else 1) + name + b"\0\0\0\0"
    phoff, phentsize = 64, 56
    note_off = phoff + phentsize
    header = bytearray(64)
    header[0:4] = b"\x7fELF"
    header[4], header[5], header[6] = 2, 1, 1  # 64-bit, little endian, version
    struct.pack_into("<HHI", header, 16, 2, 62, 1)  # ET_EXEC, EM_X86_64
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<HHH", header, 0x34, 64, phentsize, 1)
    phdr = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4)
    return bytes(header) + phdr + note + b"\0" * 256


def bzimage_of(payload: bytes, *, version: int = 0x020F, setup_sects: int = 2,
               use_offsets: bool = True, size: int = 12345) -> bytes:
    """A bzImage around `payload`, followed (as kbuild does) by the 4-byte
    uncompressed `size`, which payload_length includes."""
    image = bytearray((setup_sects + 1) * 512)
    image[0x1F1] = setup_sects
    image[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", image, 0x206, version)
    offset = 0x40  # payload_offset counts from the protected-mode code
    if use_offsets:
        struct.pack_into("<II", image, 0x248, offset, len(payload) + 4)
    code = bytearray(offset) + payload + struct.pack("<I", size) + b"\0" * 64
    return bytes(image) + bytes(code)


def _xz(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data)


def _lz4(data: bytes, chunk: int = 8 << 20) -> bytes:
    """The lz4 legacy frame `lz4 -l` writes for the kernel."""
    out = b"\x02\x21\x4c\x18"
    for pos in range(0, len(data), chunk):
        block = lz4.block.compress(data[pos:pos + chunk], store_size=False)
        out += struct.pack("<I", len(block)) + block
    return out


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "xz": _xz, "zstd": _zstd, "gzip": _gzip, "lz4": _lz4}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_extracts_each_compression_via_the_header(kind: str) -> None:
    vmlinux = elf()
    image = bzimage_of(COMPRESSORS[kind](vmlinux), size=len(vmlinux))
    assert bzimage.find_payload(image).compression == kind
    assert bzimage.extract_vmlinux(image) == vmlinux


def test_old_protocol_falls_back_to_scanning_for_the_magic() -> None:
    vmlinux = elf()
    image = bzimage_of(COMPRESSORS["xz"](vmlinux), version=0x0206, use_offsets=False)
    assert bzimage.extract_vmlinux(image) == vmlinux


def test_pvh_note_is_detected() -> None:
    assert bzimage.has_pvh_note(elf(with_pvh=True))
    assert not bzimage.has_pvh_note(elf(with_pvh=False))


def test_not_a_bzimage() -> None:
    with pytest.raises(DtkError, match="not an x86 bzImage"):
        bzimage.extract_vmlinux(elf())


def test_payload_that_is_not_elf() -> None:
    image = bzimage_of(COMPRESSORS["xz"](b"just text, not a kernel" * 10))
    with pytest.raises(DtkError, match="not an ELF"):
        bzimage.extract_vmlinux(image)


def test_corrupt_payload() -> None:
    good = COMPRESSORS["xz"](elf())
    broken = good[:12] + bytes(b ^ 0x5A for b in good[12:40]) + good[40:]
    with pytest.raises(DtkError, match="corrupt"):
        bzimage.extract_vmlinux(bzimage_of(broken))


def test_unsupported_compression_is_its_own_error() -> None:
    image = bzimage_of(b"\x89LZO\x00\r\n\x1a" + b"lzo frames here" * 8)
    with pytest.raises(bzimage.UnsupportedCompressionError, match="lzo compression"):
        bzimage.extract_vmlinux(image)


def test_lz4_across_several_blocks() -> None:
    vmlinux = elf() + bytes(range(256)) * 64
    payload = _lz4(vmlinux, chunk=4096) + struct.pack("<I", len(vmlinux))
    assert bzimage.decompress(payload, "lz4") == vmlinux
    truncated = payload[:-40] + payload[-4:]
    with pytest.raises(DtkError, match="lz4 payload is corrupt"):
        bzimage.decompress(truncated, "lz4")


def test_wrong_architecture() -> None:
    arm = bytearray(elf())
    struct.pack_into("<H", arm, 18, 183)  # EM_AARCH64
    with pytest.raises(DtkError, match="not a 64-bit x86-64"):
        bzimage.extract_vmlinux(bzimage_of(COMPRESSORS["gzip"](bytes(arm))))


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=2048), st.integers(0, 2047), st.integers(0, 2**32 - 1))
def test_garbage_only_raises_dtk_errors(noise: bytes, where: int, length: int) -> None:
    image = bytearray(bzimage_of(COMPRESSORS["xz"](elf())))
    image[0x24C:0x250] = struct.pack("<I", length)
    image[600 + where % 200:600 + where % 200 + len(noise)] = noise
    with contextlib.suppress(DtkError):
        bzimage.extract_vmlinux(bytes(image))


def test_authenticode_signature_is_seen_in_the_pe_header() -> None:
    """A PE with a certificate table (data directory 4) is signed; the same with the table
    emptied, or something that is no PE, is not."""
    header = bytearray(0x200)
    header[:2] = b"MZ"
    struct.pack_into("<I", header, 0x3C, 0x40)
    header[0x40:0x44] = b"PE\0\0"
    struct.pack_into("<H", header, 0x40 + 24, 0x20B)  # PE32+
    table = 0x40 + 24 + 112 + 4 * 8
    signed = bytearray(header) + b"\0" * 0x100
    struct.pack_into("<II", signed, table, 0x200, 0x100)
    assert bzimage.authenticode_signed(bytes(signed))
    struct.pack_into("<II", signed, table, 0, 0)
    assert not bzimage.authenticode_signed(bytes(signed))
    assert not bzimage.authenticode_signed(b"\x7fELF" + b"\0" * 100)
