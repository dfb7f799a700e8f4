"""Facts about a kernel as an installed system has it: no headers, no toolkit.

A machine that runs kernel K (or has just installed its package) holds
/boot/vmlinuz-K, /boot/config-K and /lib/modules/K, but usually no
Module.symvers (that comes with the headers, which a host without a compiler
does not install), and Debian's /boot/System.map-K is a stub that points at
the -dbg package. The exports and their CRCs are in the kernel image itself:
`__ksymtab`/`__ksymtab_gpl` hold one `struct kernel_symbol` per export and
`__kcrctab`/`__kcrctab_gpl` one CRC per entry, in the same (sorted) order,
which is how kernel/module/main.c pairs them (`symversion(crcs, index)`).

Where the headers are installed, Module.symvers is read instead (it also lists
the in-tree modules' exports); without them, only vmlinux's exports are known
here, and the caller adds the exports of the in-tree modules it needs.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from dtk import rootfs
from dtk.digest import parts_digest
from dtk.errors import DtkError
from dtk.kernel import bzimage, facts, keyring, modfile
from dtk.kernel.symvers import Symbol

_ENTRY = 12  # struct kernel_symbol with PREL32 offsets: value, name, namespace (x86-64)


def vmlinux_exports(vmlinux: bytes, source: str) -> dict[str, Symbol]:
    """Every symbol vmlinux exports, with its CRC (0 without CONFIG_MODVERSIONS)."""
    try:
        elf = ELFFile(io.BytesIO(vmlinux))
        sections = {s.name: s for s in elf.iter_sections()
                    if s.name.startswith(("__ksymtab", "__kcrctab"))}
    except (ELFError, ValueError) as exc:
        raise DtkError(f"{source}: the kernel image is not a readable ELF: {exc}") from None
    strings = sections.get("__ksymtab_strings")
    if strings is None or "__ksymtab" not in sections:
        raise DtkError(f"{source}: the kernel image has no export table (__ksymtab)")
    text = strings.data()
    base = strings["sh_addr"]
    out: dict[str, Symbol] = {}
    for table, crcs, gpl in (("__ksymtab", "__kcrctab", False),
                             ("__ksymtab_gpl", "__kcrctab_gpl", True)):
        if table not in sections:
            continue
        out |= _table(sections[table], sections.get(crcs), text, base, gpl)
    return out


def _table(table: Any, crcs: Any | None, strings: bytes, base: int,
           gpl: bool) -> dict[str, Symbol]:
    data: bytes = table.data()
    addr: int = table["sh_addr"]
    crc_data: bytes = crcs.data() if crcs is not None else b""
    out = {}
    for index in range(len(data) // _ENTRY):
        _value, name_off, ns_off = struct.unpack_from("<iii", data, index * _ENTRY)
        entry = addr + index * _ENTRY
        name = _string(strings, entry + 4 + name_off - base)
        namespace = _string(strings, entry + 8 + ns_off - base) if ns_off else ""
        crc = struct.unpack_from("<I", crc_data, index * 4)[0] \
            if len(crc_data) >= (index + 1) * 4 else 0
        out[name] = Symbol(name, crc, "vmlinux", gpl, namespace)
    return out


def _string(strings: bytes, offset: int) -> str:
    if not 0 <= offset < len(strings):
        return ""  # a namespace offset that points elsewhere: no namespace
    end = strings.find(b"\0", offset)
    return strings[offset:end if end >= 0 else len(strings)].decode("ascii", "replace")


def from_installed(root: Path, release: str, source: str) -> facts.KernelFacts:
    """K's facts from an installed system under `root` (normally /)."""
    for candidate in facts.SYMVERS_CANDIDATES:  # headers installed: the full table
        found = rootfs.resolve(root, candidate.format(k=release))
        if found is not None and found.is_file():
            return facts.from_root(root, release, source)
    vmlinuz = rootfs.resolve(root, f"/boot/vmlinuz-{release}")
    config_path = rootfs.resolve(root, f"/boot/config-{release}")
    if vmlinuz is None or not vmlinuz.is_file() or config_path is None \
            or not config_path.is_file():
        raise DtkError(f"kernel {release} is not installed under {root} (no "
                       f"/boot/vmlinuz-{release} or /boot/config-{release})",
                       hint=f"install its package first (linux-image-{release})")
    config = facts.parse_config(config_path.read_text(errors="replace"))
    vmlinux = bzimage.extract_vmlinux(vmlinuz.read_bytes())
    table = vmlinux_exports(vmlinux, str(vmlinuz))
    module_files = facts.in_tree_modules(root, release)
    vermagic = facts.vermagic_from_config(release, config)
    arch, struct_size = facts.arch_from_config(config), None
    if module_files:
        sample = modfile.peek(module_files[0].read_bytes(), str(module_files[0]))
        vermagic = sample.first("vermagic") or vermagic
        arch, struct_size = sample.machine, sample.this_module_size
    names = frozenset(modfile.module_name(p.name) for p in module_files)
    certs = tuple(dict.fromkeys(keyring.find_certificates(vmlinux)))
    return facts.KernelFacts(release, arch, vermagic, config, table, names, source,
                             struct_size, certs, facts.builtin_modules(root, release),
                             module_paths=facts.relative_paths(root, release))


def installed_key(root: Path, release: str) -> str:
    """Cache key: the content of the files the facts come from."""
    parts: list[bytes] = []
    for inner in (f"/boot/vmlinuz-{release}", f"/boot/config-{release}",
                  f"/lib/modules/{release}/modules.dep", f"/lib/modules/{release}/modules.builtin",
                  *(c.format(k=release) for c in facts.SYMVERS_CANDIDATES)):
        found = rootfs.resolve(root, inner)
        parts.append(found.read_bytes() if found is not None and found.is_file() else b"-")
    return "installed-" + parts_digest(str(facts.FORMAT), release, *parts, length=32)


def for_installed(root: Path, release: str) -> facts.KernelFacts:
    """Cached `from_installed`: the kernel image is decompressed once per content."""
    key = installed_key(root, release)
    cached = facts.load_cached(key)
    if cached is not None:
        return cached
    result = from_installed(root, release, f"{root} (installed kernel {release})")
    facts.store(key, result)
    return result
