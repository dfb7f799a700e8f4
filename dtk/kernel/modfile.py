"""Kernel module files as kmod and the kernel see them: names, compression, `.modinfo`.

The small part of reading a module that every feature needs (the checker's
full ELF reader in `dtk.kmod.elf`, the VM's dependency walk, kernel facts),
written once: file suffixes, the kernel's name for a file, decompression with
a cap on memory (an image is untrusted input: a decompression bomb must not
exhaust the host), and the `.modinfo` key=value table.
"""

from __future__ import annotations

import io
import lzma
import zlib
from dataclasses import dataclass
from pathlib import Path

import zstandard
from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile

from dtk.errors import DtkError

SUFFIXES = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
MAX_MODULE_BYTES = 512 << 20  # the largest real module (amdgpu) is ~20 MB
_COMPRESSION_MAGIC = ((b"\xfd7zXZ\x00", "xz"), (b"\x1f\x8b", "gzip"),
                      (b"\x28\xb5\x2f\xfd", "zstd"))
MACHINES = {
    "EM_X86_64": "x86_64", "EM_386": "i386", "EM_AARCH64": "arm64", "EM_ARM": "arm",
    "EM_PPC64": "ppc64", "EM_S390": "s390", "EM_RISCV": "riscv", "EM_LOONGARCH": "loongarch",
}


class ModuleError(DtkError):
    """A file that is not a readable kernel module."""


def is_module(path: str) -> bool:
    return path.endswith(SUFFIXES)


def module_name(path_or_name: str) -> str:
    """The kernel's name for a module: basename, suffix dropped, '-' → '_'."""
    base = path_or_name.rsplit("/", 1)[-1]
    for suffix in SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def read_bytes(path: Path) -> tuple[bytes, str | None]:
    """The uncompressed module image of a file and the compression it was stored with."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModuleError(f"cannot read {path}: {exc.strerror}") from None
    return uncompress(raw, str(path))


def uncompress(raw: bytes, path: str,
               limit: int = MAX_MODULE_BYTES) -> tuple[bytes, str | None]:
    """Bytes as kmod reads them (by magic, not by suffix), at most `limit` bytes."""
    kind = next((k for magic, k in _COMPRESSION_MAGIC if raw.startswith(magic)), None)
    if kind is None:
        return raw, None
    try:
        data = _decompress(raw, kind, limit + 1)
    except (lzma.LZMAError, OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
        raise ModuleError(f"{path}: corrupt compressed module: {exc}") from None
    if len(data) > limit:
        raise ModuleError(f"{path}: decompresses to more than {limit >> 20} MiB, "
                          "which no kernel module is")
    return data, kind


def _decompress(raw: bytes, kind: str, limit: int) -> bytes:
    """At most `limit` bytes: a hostile image cannot exhaust memory."""
    if kind == "zstd":
        # kmod writes zstd frames without a content size, so read it as a stream.
        with zstandard.ZstdDecompressor().stream_reader(raw) as reader:
            data = reader.read(limit)
        # The reader returns short data for a cut frame; only the frame's end proves it whole
        # (decompressing again is bounded: the output is already known to be small).
        if len(data) < limit:
            whole = zstandard.ZstdDecompressor().decompressobj()
            whole.decompress(raw)
            complete = whole.eof
        else:
            complete = True
    elif kind == "xz":
        xz = lzma.LZMADecompressor()
        data = xz.decompress(raw, max_length=limit)
        complete = xz.eof
    else:
        gz = zlib.decompressobj(wbits=31)
        data = gz.decompress(raw, limit)
        complete = gz.eof
    if not complete and len(data) < limit:
        raise EOFError(f"truncated {kind} stream")
    return data


def parse_modinfo(data: bytes) -> tuple[tuple[str, str], ...]:
    """`.modinfo` section bytes → (key, value) in file order (keys repeat)."""
    fields = []
    for chunk in data.split(b"\0"):
        if not chunk:
            continue  # .modinfo entries are NUL-padded for alignment
        key, _, value = chunk.decode("utf-8", "replace").partition("=")
        fields.append((key, value))
    return tuple(fields)


def depends_of(modinfo: tuple[tuple[str, str], ...]) -> list[str]:
    """Kernel names from `depends=` (comma-separated, may be empty; modpost writes the
    file names, which may hold dashes: the kernel's names have underscores)."""
    return [module_name(n) for key, value in modinfo if key == "depends"
            for n in value.split(",") if n]


@dataclass(frozen=True)
class ModulePeek:
    """What a quick look at a module's ELF shows, without the symbol tables."""

    machine: str
    modinfo: tuple[tuple[str, str], ...]
    this_module_size: int | None  # .gnu.linkonce.this_module: sizeof(struct module)

    def first(self, key: str) -> str | None:
        return next((v for k, v in self.modinfo if k == key), None)

    @property
    def depends(self) -> list[str]:
        return depends_of(self.modinfo)


def peek(raw: bytes, path: str) -> ModulePeek:
    """Machine, `.modinfo` and struct module size of a (possibly compressed) module."""
    data, _kind = uncompress(raw, path)
    try:
        elf = ELFFile(io.BytesIO(data))
        info = elf.get_section_by_name(".modinfo")
        this_module = elf.get_section_by_name(".gnu.linkonce.this_module")
        return ModulePeek(
            MACHINES.get(elf["e_machine"], str(elf["e_machine"])),
            parse_modinfo(info.data() if info is not None else b""),
            this_module["sh_size"] if this_module is not None else None)
    except (ELFError, ConstructError, OSError, ValueError) as exc:
        raise ModuleError(f"{path} is not a readable kernel module: {exc}") from None
