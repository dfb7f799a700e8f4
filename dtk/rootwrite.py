"""Writes into a tree that holds someone else's files, relative to directory
descriptors (dtk.rootfs), never through a link.

Every create, link, unlink and rename happens in a directory opened without
following a link (`ensure_dirs`), under a temporary name first and renamed over
the final one, so a link that an image (or another image before it) left at
the final name is replaced, never written through. Removal walks descriptors
too: a directory swapped for a link is unlinked, not descended.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import IO

from dtk.rootfs import Mode, UnsafePathError, entries, open_at, open_root

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20


def _tmp_name() -> str:
    return f".dtk-{secrets.token_hex(6)}"


def open_dir(dirfd: int, name: str) -> int | None:
    """The subdirectory `name` of `dirfd` (never a link), or None if there is none."""
    try:
        return os.open(name, _DIR, dir_fd=dirfd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise


def ensure_dirs(rootfd: int, parts: tuple[str, ...] | list[str], *, replace: bool,
                where: str = "") -> int:
    """The directory `parts` under the root, made (0755) where missing. A link or a file
    in the way is replaced when `replace`, else refused: nothing is written through it."""
    fd = os.dup(rootfd)
    try:
        for depth, part in enumerate(parts):
            if part in ("", ".", ".."):
                raise UnsafePathError(f"{where}: a path component is {part!r}")
            sub = open_dir(fd, part)
            if sub is None:
                if _kind(fd, part) is not None:
                    if not replace:
                        raise UnsafePathError(f"{where}: {'/'.join(parts[:depth + 1])} is a "
                                              "link or a file, and would be written through")
                    remove_entry(fd, part)
                with contextlib.suppress(FileExistsError):  # made meanwhile: opened below,
                    os.mkdir(part, 0o755, dir_fd=fd)  # following nothing
                sub = os.open(part, _DIR, dir_fd=fd)
            os.close(fd)
            fd = sub
        return fd
    except BaseException:
        os.close(fd)
        raise


def _kind(dirfd: int, name: str) -> int | None:
    try:
        return stat.S_IFMT(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return None


def remove_entry(dirfd: int, name: str) -> None:
    """Remove `name` in `dirfd` whatever it is; a directory with everything under it,
    walked by descriptor (a link is removed, never followed)."""
    kind = _kind(dirfd, name)
    if kind is None:
        return
    if kind == stat.S_IFDIR:
        sub = open_dir(dirfd, name)
        if sub is not None:
            try:
                clear_dir(sub)
            finally:
                os.close(sub)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(name, dir_fd=dirfd)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dirfd)


def clear_dir(dirfd: int) -> None:
    """Remove everything in the directory `dirfd`, keeping the directory."""
    for name, _info in entries(dirfd):
        remove_entry(dirfd, name)


def _publish(dirfd: int, tmp: str, name: str) -> None:
    """Rename `tmp` over `name`: a link or file there is replaced, a directory removed."""
    try:
        if _kind(dirfd, name) == stat.S_IFDIR:
            remove_entry(dirfd, name)
        os.rename(tmp, name, src_dir_fd=dirfd, dst_dir_fd=dirfd)
    except BaseException:
        remove_entry(dirfd, tmp)
        raise


def write_stream(dirfd: int, name: str, stream: IO[bytes], mode: int,
                 size: int | None = None) -> None:
    """`name` in `dirfd` becomes a regular file with the stream's bytes (at most `size`)."""
    tmp = _tmp_name()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dirfd)
    try:
        with os.fdopen(fd, "wb", closefd=False) as out:
            left = size
            while left is None or left > 0:
                chunk = stream.read(_CHUNK if left is None else min(left, _CHUNK))
                if not chunk:
                    break
                out.write(chunk)
                if left is not None:
                    left -= len(chunk)
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        remove_entry(dirfd, tmp)
        raise
    os.close(fd)
    _publish(dirfd, tmp, name)


def copy_file(srcfd: int, dirfd: int, name: str, mode: int) -> None:
    """`name` in `dirfd` becomes a copy of the open regular file `srcfd`."""
    size = os.fstat(srcfd).st_size  # a writer still appending cannot make this endless
    with os.fdopen(os.dup(srcfd), "rb") as stream:
        write_stream(dirfd, name, stream, mode, size)


def make_symlink(dirfd: int, name: str, target: str) -> None:
    tmp = _tmp_name()
    os.symlink(target, tmp, dir_fd=dirfd)
    _publish(dirfd, tmp, name)


def make_hardlink(src_dirfd: int, src_name: str, dirfd: int, name: str) -> None:
    """`name` in `dirfd` becomes another name of the regular file `src_name` (never of a
    link's target)."""
    if _kind(src_dirfd, src_name) != stat.S_IFREG:
        raise UnsafePathError(f"hard link to {src_name}, which is not a regular file")
    tmp = _tmp_name()
    os.link(src_name, tmp, src_dir_fd=src_dirfd, dst_dir_fd=dirfd, follow_symlinks=False)
    _publish(dirfd, tmp, name)


def links_leaving(rootfd: int, where: tuple[str, ...] = ()) -> list[str]:
    """Every link under the root whose target, resolved as the kernel resolves it from
    where the link is, leaves the root (or loops): what `modprobe -d`, the firmware
    loader or a `cp -R` would follow out of the tree."""
    found = []
    here = os.open("/".join(where) or ".", _DIR, dir_fd=rootfd)
    try:
        for name, info in entries(here):
            path = (*where, name)
            if stat.S_ISDIR(info.st_mode):
                found += links_leaving(rootfd, path)
            elif stat.S_ISLNK(info.st_mode):
                try:
                    opened = open_at(rootfd, "/".join(path), Mode.BENEATH)
                except UnsafePathError:
                    found.append("/".join(path) + " -> " + os.readlink(name, dir_fd=here))
                else:
                    if opened is not None:
                        opened.close()
    finally:
        os.close(here)
    return found


def copy_into(srcfd: int, destfd: int, where: str,
              keep_link: Callable[[tuple[str, ...], str], bool] | None = None,
              path: tuple[str, ...] = ()) -> None:
    """Copy the directory `srcfd` into the directory `destfd`, merging: directories
    made (a link or file in their way replaced), regular files and links replaced by
    rename (never written through), without set-id bits; devices, fifos and sockets
    left out. A link is copied as a link when `keep_link(path, target)` says so (all
    of them without `keep_link`)."""
    for name, info in entries(srcfd):
        inner = (*path, name)
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            target = os.readlink(name, dir_fd=srcfd)
            if keep_link is None or keep_link(inner, target):
                make_symlink(destfd, name, target)
        elif stat.S_ISDIR(mode):
            sub = open_dir(srcfd, name)
            if sub is None:
                raise UnsafePathError(f"{where}/{'/'.join(inner)} changed while it was copied")
            try:
                out = ensure_dirs(destfd, [name], replace=True, where=where)
                try:
                    copy_into(sub, out, where, keep_link, inner)
                finally:
                    os.close(out)
            finally:
                os.close(sub)
        elif stat.S_ISREG(mode):
            try:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=srcfd)
            except OSError as exc:
                raise UnsafePathError(f"{where}/{'/'.join(inner)} changed while it was copied "
                                      f"({exc.strerror})") from None
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise UnsafePathError(f"{where}/{'/'.join(inner)} changed while it was "
                                          "copied")
                copy_file(fd, destfd, name, 0o755 if mode & 0o111 else 0o644)
            finally:
                os.close(fd)


def copy_tree(src: Path, dest: Path) -> None:
    """Copy the directory `src` to the new directory `dest` without following a link.

    Links are copied as links: their text names a path inside the image they end up
    in (KMM's `…/host` link), never one on this host. Regular files are copied by
    content, without set-id bits; devices, fifos and sockets are left out. `src`
    itself must be a directory, not a link to one.
    """
    if not src.exists() and not src.is_symlink():
        raise UnsafePathError(f"/{src.name} does not exist")
    try:
        fd = open_root(src)
    except UnsafePathError:
        raise UnsafePathError(f"/{src.name} is a link or not a directory",
                              hint="a build must leave its output as a plain directory"
                              ) from None
    try:
        dest.mkdir(mode=0o755)
        out = open_root(dest)
        try:
            copy_into(fd, out, "/" + src.name)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove the directory `path` (dtk's own, holding someone else's files) and all
    under it, by descriptor; nothing if it is not there."""
    parent = open_root(path.parent)
    try:
        remove_entry(parent, path.name)
    finally:
        os.close(parent)
