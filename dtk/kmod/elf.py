"""Read a kernel module (.ko, .ko.xz, .ko.gz, .ko.zst) in pure Python.

pyelftools reads the ELF header and section table; the hot tables (symbols,
`__versions`) are unpacked with `struct` because pyelftools' per-symbol
parsing is ~50x slower and a kernel has thousands of modules to read.

Export encoding, read from real Debian 6.1 and 6.12 modules: the final .ko
has `__ksymtab` / `__ksymtab_gpl` sections of PREL32 entries, a local symbol
`__ksymtab_<name>` in one of them (which says GPL or not), `__kstrtabns_<name>`
pointing at the namespace string in `__ksymtab_strings` (empty: none), and
`__crc_<name>` pointing at the u32 CRC in `__kcrctab` / `__kcrctab_gpl`.
(6.5+ generates these entries in modpost from `.export_symbol`, but the
linked module looks the same.)
"""

from __future__ import annotations

import dataclasses
import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile

from dtk.kernel import modfile
from dtk.kernel import modsig as sigmod
from dtk.kernel.modfile import ModuleError

VERSION_ENTRY_SIZE = 64  # struct modversion_info: unsigned long crc + name[64 - sizeof(long)]
_SHN_UNDEF = 0
_STB_WEAK = 2
_GPL_COMPATIBLE = frozenset({  # include/linux/license.h
    "GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL", "Dual MIT/GPL", "Dual MPL/GPL",
})


@dataclass(frozen=True)
class Export:
    name: str
    gpl_only: bool
    namespace: str
    crc: int | None


@dataclass(frozen=True)
class KernelModule:
    path: str
    machine: str
    modinfo: tuple[tuple[str, str], ...]  # in file order; keys repeat (alias, parm, depends)
    versions: tuple[tuple[str, int], ...]  # (symbol, crc) from __versions
    exports: tuple[Export, ...]
    undefined: tuple[str, ...]  # symbols the module needs (strong undefined)
    weak_undefined: tuple[str, ...]
    signature: sigmod.ModuleSignature | None
    compression: str | None = None
    # A signature the kernel cannot use (mod_check_sig, PKCS#7 parse): the module is still
    # read, so that check can report the kernel's refusal instead of failing itself.
    signature_problem: sigmod.SignatureProblem | None = None
    this_module_size: int | None = None  # .gnu.linkonce.this_module: sizeof(struct module)
    _index: dict[str, list[str]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        # Built here, not passed in, so dataclasses.replace() never shares or reuses it.
        index: dict[str, list[str]] = {}
        for key, value in self.modinfo:
            index.setdefault(key, []).append(value)
        object.__setattr__(self, "_index", index)

    def field_values(self, key: str) -> list[str]:
        return list(self._index.get(key, []))

    def first(self, key: str) -> str | None:
        values = self._index.get(key)
        return values[0] if values else None

    @property
    def name(self) -> str:
        """The module name the kernel uses (.modinfo `name`, else the file stem)."""
        return self.first("name") or modfile.module_name(self.path)

    @property
    def vermagic(self) -> str | None:
        return self.first("vermagic")

    @property
    def depends(self) -> list[str]:
        text = self.first("depends") or ""
        return [d for d in text.split(",") if d]

    @property
    def import_ns(self) -> set[str]:
        return set(self.field_values("import_ns"))

    @property
    def license(self) -> str | None:
        return self.first("license")

    @property
    def gpl_compatible(self) -> bool:
        return self.license in _GPL_COMPATIBLE

    @property
    def has_versions(self) -> bool:
        return bool(self.versions)

    def to_json(self) -> dict[str, Any]:
        sig = self.signature
        return {
            "path": self.path,
            "name": self.name,
            "machine": self.machine,
            "compression": self.compression,
            "this_module_size": self.this_module_size,
            "modinfo": [[k, v] for k, v in self.modinfo],
            "versions": [{"symbol": s, "crc": f"0x{c:08x}"} for s, c in self.versions],
            "exports": [{"symbol": e.name, "gpl_only": e.gpl_only, "namespace": e.namespace,
                         "crc": None if e.crc is None else f"0x{e.crc:08x}"}
                        for e in self.exports],
            "undefined": list(self.undefined),
            "weak_undefined": list(self.weak_undefined),
            "signature": None if sig is None else signature_json(sig),
            "signature_problem": None if self.signature_problem is None else {
                "errno": self.signature_problem.errno,
                "message": self.signature_problem.message},
        }


def signature_json(sig: sigmod.ModuleSignature) -> dict[str, Any]:
    return {
        "id_type": sig.id_type, "signer": sig.signer.issuer_cn,
        "key_id": colon_hex(sig.signer.key_id),
        "key_id_kind": "skid" if sig.signer.skid is not None else "serial",
        "hash_algo": sig.hash_algo, "sig_algo": sig.sig_algo,
        "signed_length": sig.signed_length, "signature": sig.signature.hex(),
    }


def colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02X}" for b in data)


def read_module(path: Path) -> KernelModule:
    data, compression = modfile.read_bytes(path)
    return parse_module(data, str(path), compression)


def parse_module(data: bytes, path: str = "<bytes>",
                 compression: str | None = None) -> KernelModule:
    """Parse a module's bytes; any malformation becomes a ModuleError."""
    try:
        appended = sigmod.read(data)
        module = _parse_elf(appended.content, path, appended.signature, compression)
    except (ELFError, ConstructError, struct.error, ValueError, IndexError, KeyError,
            OverflowError, UnicodeDecodeError, AttributeError, TypeError) as exc:
        raise ModuleError(f"{path}: not a valid kernel module ({type(exc).__name__}: {exc})",
                          hint="the file is truncated or corrupt; rebuild it") from None
    if appended.problem is None:
        return module
    return dataclasses.replace(module, signature_problem=appended.problem)


def _parse_elf(body: bytes, path: str, sig: sigmod.ModuleSignature | None,
               compression: str | None) -> KernelModule:
    if not body.startswith(b"\x7fELF"):
        raise ModuleError(f"{path}: not an ELF file", hint="give a .ko built by kbuild")
    elf = ELFFile(io.BytesIO(body))
    if elf["e_type"] != "ET_REL":
        raise ModuleError(f"{path}: ELF type {elf['e_type']}, but kernel modules are "
                          "relocatable objects (ET_REL)")
    # pyelftools re-parses every header on each iter_sections(): read the table once.
    table = list(elf.iter_sections())
    sections = {s.name: s for s in table}
    if ".modinfo" not in sections:
        raise ModuleError(f"{path}: no .modinfo section, so this is not a kernel module",
                          hint="a kernel module is linked by kbuild's modpost (make M=…)")
    little = elf.little_endian
    is64 = elf.elfclass == 64
    symbols = _symbols(table, little, is64)
    return KernelModule(
        path=path,
        machine=modfile.MACHINES.get(elf["e_machine"], str(elf["e_machine"])),
        modinfo=modfile.parse_modinfo(sections[".modinfo"].data()),
        versions=_versions(sections.get("__versions"), little, is64),
        exports=_exports(table, symbols, little),
        undefined=tuple(n for n, _v, shndx, bind in symbols if shndx == _SHN_UNDEF and n
                        and bind != _STB_WEAK),
        weak_undefined=tuple(n for n, _v, shndx, bind in symbols if shndx == _SHN_UNDEF and n
                             and bind == _STB_WEAK),
        signature=sig, compression=compression,
        this_module_size=this_module["sh_size"] if (this_module := sections.get(
            ".gnu.linkonce.this_module")) is not None else None)


def _versions(section: Any, little: bool, is64: bool) -> tuple[tuple[str, int], ...]:
    if section is None:
        return ()
    data = section.data()
    crc_fmt = ("<" if little else ">") + ("Q" if is64 else "I")
    crc_size = 8 if is64 else 4
    out = []
    for pos in range(0, len(data) - VERSION_ENTRY_SIZE + 1, VERSION_ENTRY_SIZE):
        (crc,) = struct.unpack_from(crc_fmt, data, pos)
        name = data[pos + crc_size: pos + VERSION_ENTRY_SIZE].split(b"\0", 1)[0]
        out.append((name.decode("utf-8", "replace"), crc & 0xFFFFFFFF))
    return tuple(out)


Symbol = tuple[str, int, int, int]  # name, value, section index, binding


def _symbols(table: list[Any], little: bool, is64: bool) -> list[Symbol]:
    symtab = next((s for s in table if s["sh_type"] == "SHT_SYMTAB"), None)
    if symtab is None:
        return []
    strtab = table[symtab["sh_link"]].data()
    data = symtab.data()
    end = "<" if little else ">"
    out: list[Symbol] = []
    if is64:
        for name_off, info, _other, shndx, value, _size in struct.iter_unpack(
                end + "IBBHQQ", data[: len(data) - len(data) % 24]):
            out.append((_cstr(strtab, name_off), value, shndx, info >> 4))
    else:
        for name_off, value, _size, info, _other, shndx in struct.iter_unpack(
                end + "IIIBBH", data[: len(data) - len(data) % 16]):
            out.append((_cstr(strtab, name_off), value, shndx, info >> 4))
    return out


def _cstr(table: bytes, offset: int) -> str:
    if offset >= len(table):
        raise ValueError(f"string offset {offset} outside the string table")
    end = table.find(b"\0", offset)
    return table[offset: end if end >= 0 else len(table)].decode("utf-8", "replace")


def _exports(table: list[Any], symbols: list[Symbol], little: bool) -> tuple[Export, ...]:
    names = {i: s.name for i, s in enumerate(table)}
    section_data: dict[int, bytes] = {}

    def data_of(index: int) -> bytes:
        if index not in section_data:
            section_data[index] = table[index].data()
        return section_data[index]

    by_name = {}
    for name, value, shndx, _bind in symbols:
        if name.startswith(("__kstrtabns_", "__crc_")):
            by_name[name] = (value, shndx)
    exports = []
    for name, _value, shndx, _bind in symbols:
        if not name.startswith("__ksymtab_"):
            continue
        section = names.get(shndx, "")
        if section not in ("__ksymtab", "__ksymtab_gpl"):
            continue
        sym = name[len("__ksymtab_"):]
        namespace = ""
        if ns := by_name.get(f"__kstrtabns_{sym}"):
            namespace = _cstr(data_of(ns[1]), ns[0])
        crc = None
        if found := by_name.get(f"__crc_{sym}"):
            (crc,) = struct.unpack_from("<I" if little else ">I", data_of(found[1]), found[0])
        exports.append(Export(sym, section == "__ksymtab_gpl", namespace, crc))
    return tuple(sorted(exports, key=lambda e: e.name))
