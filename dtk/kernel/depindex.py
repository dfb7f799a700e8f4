"""kmod's binary index files (modules.dep.bin, …), read as libkmod reads them.

kmod's `modprobe -d DIR NAME` (what KMM's worker runs) looks NAME up in
modules.dep.bin only; the text modules.dep is for people, and busybox's
depmod writes nothing else. So what an image can load is what its .bin says.

Format (libkmod/libkmod-index.c, depmod's index_write): big-endian u32 magic
0xB007F457, u32 version (major 2), u32 offset of the root node. A node
offset carries flags in its top bits; at the node: a NUL-terminated prefix
(PREFIX), then the child range first..last and one u32 offset per child
character (CHILDS), then a u32 value count and per value a u32 priority and a
NUL-terminated string (VALUES). A key is the path of characters to a node with
values; for modules.dep.bin the key is the module name and the value its
modules.dep line ("kernel/…/x.ko: dep.ko …").
"""

from __future__ import annotations

import struct

MAGIC = 0xB007F457
_MAJOR = 2
_PREFIX, _VALUES, _CHILDS = 0x80000000, 0x40000000, 0x20000000
_OFFSET_MASK = 0x0FFFFFFF
_MAX_NODES = 1 << 22  # far above any real index (a distribution kernel: ~50,000 nodes)


class DepIndexError(ValueError):
    """The file is not a kmod index libkmod would read."""


def read_index(data: bytes) -> dict[str, list[str]]:
    """Every key of the index with its values (in file order)."""
    if len(data) < 12:
        raise DepIndexError("shorter than the index header")
    magic, version, root = struct.unpack_from(">III", data, 0)
    if magic != MAGIC:
        raise DepIndexError(f"bad magic 0x{magic:08x} (not a kmod index)")
    if version >> 16 != _MAJOR:
        raise DepIndexError(f"index version {version >> 16}, libkmod reads {_MAJOR}")
    out: dict[str, list[str]] = {}
    stack = [(root, "")]
    seen: set[int] = set()
    while stack:
        offset, key = stack.pop()
        if offset & _OFFSET_MASK in seen or len(seen) > _MAX_NODES:
            raise DepIndexError("the index links a node twice (truncated or corrupt)")
        seen.add(offset & _OFFSET_MASK)
        try:
            key, children, values = _node(data, offset, key)
        except (struct.error, ValueError, IndexError) as exc:
            raise DepIndexError(f"truncated or corrupt node at 0x{offset & _OFFSET_MASK:x}: "
                                f"{exc}") from None
        if values:
            out[key] = values
        stack.extend(reversed(children))
    return out


def _node(data: bytes, offset: int, key: str) -> tuple[str, list[tuple[int, str]], list[str]]:
    pos = offset & _OFFSET_MASK
    if pos == 0 and not offset & (_PREFIX | _VALUES | _CHILDS):
        return key, [], []  # an empty root: an index with no keys
    if offset & _PREFIX:
        prefix, pos = _cstring(data, pos)
        key += prefix
    children: list[tuple[int, str]] = []
    if offset & _CHILDS:
        first, last = data[pos], data[pos + 1]
        pos += 2
        for i, char in enumerate(range(first, last + 1)):
            (child,) = struct.unpack_from(">I", data, pos + 4 * i)
            if child:
                children.append((child, key + chr(char)))
        pos += 4 * (last - first + 1)
    values: list[str] = []
    if offset & _VALUES:
        (count,) = struct.unpack_from(">I", data, pos)
        pos += 4
        for _ in range(count):
            pos += 4  # priority: the order depmod found them in
            value, pos = _cstring(data, pos)
            values.append(value)
    return key, children, values


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\0", pos)
    return data[pos:end].decode("utf-8", "replace"), end + 1


def dep_entries(data: bytes) -> dict[str, str]:
    """modules.dep.bin: module name → its path relative to the kernel directory."""
    return {name: values[0].partition(":")[0] for name, values in read_index(data).items()
            if values}
