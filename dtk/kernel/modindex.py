"""kmod's binary index files (`modules.dep.bin`, `modules.alias.bin`, …), read in Python.

kmod's `modprobe -d DIR NAME` — what KMM's worker runs — looks NAME up in
`modules.dep.bin` only; the text `modules.dep` is for people (busybox's
depmod writes only that, and kmod then says "Module NAME not found in
directory …"). The format (libkmod-index.c): a big-endian header (magic,
version, root offset) and a trie whose nodes carry an optional prefix,
children indexed by byte, and values (priority, text). Pure: bytes in.
"""

from __future__ import annotations

import struct

from dtk.errors import DtkError

MAGIC = 0xB007F457
VERSION_MAJOR = 2
_PREFIX, _VALUES, _CHILDS, _MASK = 0x80000000, 0x40000000, 0x20000000, 0x0FFFFFFF


def _cstring(data: bytes, at: int) -> tuple[str, int]:
    end = data.index(b"\0", at)
    return data[at:end].decode(errors="replace"), end + 1


def read_index(data: bytes) -> dict[str, list[str]]:
    """Every key of the index with its values (highest priority first)."""
    if len(data) < 12:
        raise DtkError("not a kmod index: too short")
    magic, version, root = struct.unpack_from(">III", data, 0)
    if magic != MAGIC or version >> 16 != VERSION_MAJOR:
        raise DtkError(f"not a kmod index (magic {magic:#x}, version {version:#x})")
    out: dict[str, list[str]] = {}
    todo = [(root, "")]
    seen: set[int] = set()
    try:
        while todo:
            ref, key = todo.pop()
            at = ref & _MASK
            if at in seen:  # a trie shares no node: a hostile file must not loop
                raise DtkError("kmod index links a node twice")
            seen.add(at)
            if ref & _PREFIX:
                prefix, at = _cstring(data, at)
                key += prefix
            if ref & _CHILDS:
                first, last = data[at], data[at + 1]
                at += 2
                for n in range(last - first + 1):
                    (child,) = struct.unpack_from(">I", data, at + 4 * n)
                    if child:
                        todo.append((child, key + chr(first + n)))
                at += 4 * (last - first + 1)
            if ref & _VALUES:
                (count,) = struct.unpack_from(">I", data, at)
                at += 4
                values = []
                for _ in range(count):
                    (priority,) = struct.unpack_from(">I", data, at)
                    value, at = _cstring(data, at + 4)
                    values.append((priority, value))
                out[key] = [v for _, v in sorted(values, key=lambda pv: pv[0])]
    except (struct.error, IndexError, ValueError) as exc:
        raise DtkError(f"kmod index is truncated or corrupt ({exc})") from None
    return out


def dep_entries(data: bytes) -> dict[str, str]:
    """modules.dep.bin: module name → its path relative to the kernel directory."""
    return {name: values[0].partition(":")[0] for name, values in read_index(data).items()
            if values}
