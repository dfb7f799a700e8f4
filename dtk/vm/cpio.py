"""A deterministic writer of the kernel's initramfs format (cpio "newc").

Why not the cpio tool: the archive's content is fully known in Python (paths,
modes, bytes), entries need no host ownership or timestamps, and equal inputs
must give byte-identical archives so that cached parts can be content-hashed.

The kernel accepts several archives concatenated; later entries replace
earlier ones. Each archive created here adds the parent directories of its
entries first, because the kernel's unpacker does not create them.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    path: str  # absolute in the guest, e.g. "/bin/busybox"
    mode: int  # full st_mode, type bits included
    data: bytes = b""  # file content, or a symlink's target
    rdev: tuple[int, int] = (0, 0)


def file(path: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(path, stat.S_IFREG | perm, data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def directory(path: str, perm: int = 0o755) -> Entry:
    return Entry(path, stat.S_IFDIR | perm)


def chardev(path: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, entry: Entry, name: bytes) -> bytes:
    fields = (ino, entry.mode, 0, 0, 2 if stat.S_ISDIR(entry.mode) else 1, 0,
              len(entry.data), 0, 0, entry.rdev[0], entry.rdev[1], len(name) + 1, 0)
    return b"070701" + b"".join(f"{v:08x}".encode() for v in fields)


def _parents(path: str) -> list[str]:
    parts = PurePosixPath(path).parents
    return [str(p) for p in reversed(parts) if str(p) != "/"]


def write(out: BinaryIO, entries: list[Entry]) -> None:
    """Write one archive: parents first, then entries in the order given."""
    seen: set[str] = set()
    ino = 1
    for entry in entries:
        if not entry.path.startswith("/"):
            raise ValueError(f"initramfs paths are absolute: {entry.path}")
        for parent in _parents(entry.path):
            if parent not in seen:
                seen.add(parent)
                ino = _write_one(out, ino, directory(parent))
        if entry.path not in seen:
            seen.add(entry.path)
            ino = _write_one(out, ino, entry)
    _write_name(out, 0, Entry(_TRAILER, 0), _TRAILER.encode())


def _write_one(out: BinaryIO, ino: int, entry: Entry) -> int:
    _write_name(out, ino, entry, entry.path.lstrip("/").encode())
    return ino + 1


def _write_name(out: BinaryIO, ino: int, entry: Entry, name: bytes) -> None:
    head = _header(ino, entry, name) + name + b"\0"
    out.write(head + _pad(len(head)))
    out.write(entry.data + _pad(len(entry.data)))


def write_initrd(path: Path, archives: Sequence[Path], entries: list[Entry]) -> Path:
    """An initramfs: ready-made archives (userland, in-tree modules) then `entries`,
    concatenated; the kernel unpacks them in order, later files over earlier ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for archive in archives:
            out.write(archive.read_bytes())
        write(out, entries)
    return path
