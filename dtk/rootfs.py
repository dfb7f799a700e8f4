"""Paths inside an image root mounted on the host, resolved the way the image sees them.

An image's symlinks are written for the image: `/lib/modules/K/build` is
absolute *inside* the image. Followed naively on the host it names a host
file, so every path is resolved here component by component with the root
as `/`. A link that climbs above the root (`../../..`) is not a harmless
chroot clamp when dtk writes signed modules back: it is refused.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from dtk.errors import DtkError

_MAX_LINKS = 40  # what Linux allows before ELOOP


class UnsafePathError(DtkError):
    """A path or symlink in an image that points outside the image."""


def resolve(root: Path, inner: str) -> Path | None:
    """Host path of `inner` (absolute in the image), or None if it does not exist.

    Raises UnsafePathError when a `..` or a symlink would leave the root.
    """
    parts = list(PurePosixPath("/", inner).parts[1:])
    current: list[str] = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                raise UnsafePathError(f"'{inner}' climbs above the image root",
                                 hint="paths and symlinks in images must stay inside the image")
            current.pop()
            continue
        host = root.joinpath(*current, part)
        try:
            mode = host.lstat().st_mode
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DtkError(f"cannot read {host}: {exc.strerror}") from None
        if stat.S_ISLNK(mode):
            links += 1
            if links > _MAX_LINKS:
                raise UnsafePathError(f"too many symlinks resolving '{inner}' in the image")
            target = str(host.readlink())
            if target.startswith("/"):
                current = []
            parts = list(PurePosixPath(target).parts[1 if target.startswith("/") else 0:]) + parts
            continue
        current.append(part)
    return root.joinpath(*current)


def walk_files(root: Path, inner_dir: str) -> Iterator[tuple[str, Path]]:
    """Regular files under `inner_dir` as (path in image, host path); links resolved safely.

    Directory symlinks are not descended (KMM images link `…/host` to the
    node's modules, which are not part of the image); file symlinks are
    resolved inside the image, and a dangling one is skipped.
    """
    start = resolve(root, inner_dir)
    if start is None or not start.is_dir():
        return
    base = PurePosixPath("/", inner_dir)
    for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
        rel = Path(dirpath).relative_to(start)
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]):
            inner = str(base.joinpath(*rel.parts, name))
            host = Path(dirpath) / name
            if host.is_symlink():
                target = resolve(root, inner)
                if target is None or not target.is_file():
                    continue
                yield inner, target
            elif host.is_file():
                yield inner, host


def glob(root: Path, pattern: str) -> list[tuple[str, Path]]:
    """Files matching an absolute shell glob inside the image, resolved safely.

    Matching is per path component (`*` does not cross `/`), like the ash
    globs KMM's sign step expands.
    """
    parts = PurePosixPath("/", pattern).parts[1:]
    found: list[str] = ["/"]
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        nxt: list[str] = []
        for inner_dir in found:
            host_dir = resolve(root, inner_dir)
            if host_dir is None or not host_dir.is_dir():
                continue
            if not any(ch in part for ch in "*?["):
                names = [part]
            else:
                names = sorted(n for n in (c.name for c in host_dir.iterdir())
                               if fnmatch.fnmatchcase(n, part)
                               and (part.startswith(".") or not n.startswith(".")))
            nxt.extend(str(PurePosixPath(inner_dir, n)) for n in names)
        found = nxt if not last else [f for f in nxt if _is_file(root, f)]
    return [(inner, host) for inner in found if (host := resolve(root, inner)) is not None]


def _is_file(root: Path, inner: str) -> bool:
    host = resolve(root, inner)
    return host is not None and host.is_file()


# Opened relative to their parent's descriptor, never through a link: a tree that
# another process (an untrusted build) may still rewrite cannot swap a directory for a
# link to a host path between a check and a read.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def copy_tree(src: Path, dest: Path) -> None:
    """Copy the directory `src` to the new directory `dest` without following a link.

    Links are copied as links: their text names a path inside the image they end up
    in (KMM's `…/host` link), never one on this host. Regular files are copied by
    content, without set-id bits; devices, fifos and sockets are left out. `src`
    itself must be a directory, not a link to one.
    """
    try:
        fd = os.open(src, _DIR_FLAGS)
    except FileNotFoundError:
        raise UnsafePathError(f"/{src.name} does not exist") from None
    except OSError:
        raise UnsafePathError(f"/{src.name} is a link or not a directory",
                              hint="a build must leave its output as a plain directory"
                              ) from None
    try:
        dest.mkdir(mode=0o755)
        _copy_dir(fd, dest, "/" + src.name)
    finally:
        os.close(fd)


def _copy_dir(fd: int, dest: Path, where: str) -> None:
    for name in sorted(os.listdir(fd)):
        mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
        target = dest / name
        if stat.S_ISLNK(mode):
            target.symlink_to(os.readlink(name, dir_fd=fd))
        elif stat.S_ISDIR(mode):
            sub = _open_at(fd, name, _DIR_FLAGS, f"{where}/{name}")
            try:
                target.mkdir(mode=0o755)
                _copy_dir(sub, target, f"{where}/{name}")
            finally:
                os.close(sub)
        elif stat.S_ISREG(mode):
            _copy_file(fd, name, target, f"{where}/{name}")


def _open_at(fd: int, name: str, flags: int, where: str) -> int:
    try:
        return os.open(name, flags, dir_fd=fd)
    except OSError as exc:
        raise UnsafePathError(f"{where} changed while it was copied ({exc.strerror})") from None


def _copy_file(fd: int, name: str, target: Path, where: str) -> None:
    src = _open_at(fd, name, _FILE_FLAGS, where)
    try:
        info = os.fstat(src)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePathError(f"{where} changed while it was copied")
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                      0o755 if info.st_mode & 0o111 else 0o644)
        try:
            left = info.st_size  # a writer still appending cannot make this endless
            while left > 0 and (sent := os.sendfile(out, src, None, min(left, 1 << 24))):
                left -= sent
        finally:
            os.close(out)
    finally:
        os.close(src)


def read_regular(directory: Path, name: str) -> bytes | None:
    """The content of the regular file `name` in `directory`, or None if it is missing,
    a link or anything else: for files an untrusted process wrote (a link there
    would make dtk read, and perhaps show, a host file)."""
    try:
        dfd = os.open(directory, _DIR_FLAGS)
    except OSError:
        return None
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dfd)
    except OSError:
        return None
    finally:
        os.close(dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as handle:
            return handle.read()
    finally:
        os.close(fd)
