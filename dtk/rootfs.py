"""The one way dtk reads a directory tree someone else wrote: an image mounted on the
host, a package unpacked, a build's output, a driver image unpacked on a node.

Every path is resolved component by component relative to the tree's root
*descriptor*, never as a host path string, so a link in the tree is followed
only inside the tree and a directory swapped for a link mid-walk cannot lead
out. Three ways to resolve (`Mode`):

* IMAGE: as the image sees itself: an absolute link names a path inside the
  image (`/lib/modules/K/build`), and a `..` or a link that climbs above the
  root is refused (not clamped as a chroot would: dtk writes signed modules
  back, and a tree with such links is hostile);
* BENEATH: nothing may leave the root, absolute links included: what a node's
  prepared tree must satisfy, since `modprobe -d TREE` resolves it with the
  host's own rules (`openat2` with RESOLVE_BENEATH where the kernel has it);
* NOFOLLOW: no link is followed at all: where dtk writes.

`dtk.rootwrite` builds the writers on `open_at`.
"""

from __future__ import annotations

import ctypes
import enum
import errno
import fnmatch
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from dtk.errors import DtkError

_MAX_LINKS = 40  # what Linux allows before ELOOP


class UnsafePathError(DtkError):
    """A path or symlink in a tree that points outside the tree."""


class Mode(enum.Enum):
    IMAGE = "image"
    BENEATH = "beneath"
    NOFOLLOW = "nofollow"


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def parts_of(inner: str) -> list[str]:
    """The components of a path in a tree, '..' kept. A '.' after a name, or a trailing
    '/', is kept as '.': as for the kernel, the name must then be a directory."""
    parts = [p for p in inner.split("/") if p]
    if inner.endswith("/") and parts:
        parts.append(".")
    while parts and parts[0] == ".":
        parts.pop(0)
    return parts


@dataclass
class Opened:
    """What `open_at` found: a descriptor (the caller closes it) and the physical
    components from the root to it (no link among them)."""

    fd: int
    parts: tuple[str, ...]

    def close(self) -> None:
        os.close(self.fd)


# --- openat2 (Linux 5.6+): the kernel resolves beneath the root, atomically ---------------

class _OpenHow(ctypes.Structure):
    _fields_ = (("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64))


_SYS_OPENAT2 = 437  # the same number on every architecture with the generic table
_RESOLVE_NO_MAGICLINKS, _RESOLVE_NO_SYMLINKS, _RESOLVE_BENEATH = 0x02, 0x04, 0x08
_openat2_usable = True  # switched off on the first ENOSYS (an old kernel, a seccomp filter)
_libc = ctypes.CDLL(None, use_errno=True)


def _openat2(rootfd: int, inner: str, flags: int, resolve: int) -> int | None:
    """A descriptor, or None when openat2 cannot answer here (the walk then does)."""
    global _openat2_usable  # noqa: PLW0603 (one probe per process)
    how = _OpenHow(flags, 0, resolve)
    path = (inner.lstrip("/") or ".").encode()
    for _attempt in range(4):
        fd = _libc.syscall(_SYS_OPENAT2, rootfd, path, ctypes.byref(how), ctypes.sizeof(how))
        if fd >= 0:
            return int(fd)
        code = ctypes.get_errno()
        if code == errno.EAGAIN:  # a rename elsewhere raced a '..': the kernel asks to retry
            continue
        if code in (errno.ENOSYS, errno.EPERM, errno.E2BIG):
            _openat2_usable = False
            return None
        raise OSError(code, os.strerror(code))
    return None


def _physical(rootfd: int, fd: int) -> tuple[str, ...]:
    root = str(Path(f"/proc/self/fd/{rootfd}").readlink())
    found = str(Path(f"/proc/self/fd/{fd}").readlink())
    rel = os.path.relpath(found, root)
    return () if rel == "." else tuple(rel.split("/"))


def _by_kernel(rootfd: int, inner: str, mode: Mode, flags: int) -> Opened | bool | None:
    """openat2's answer; False when it has none (not usable, or a race left unresolved)."""
    resolve = _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS
    if mode is Mode.NOFOLLOW:
        resolve |= _RESOLVE_NO_SYMLINKS
    try:
        # The final component is followed as the mode says (RESOLVE_* rules it).
        fd = _openat2(rootfd, inner, (flags & ~os.O_NOFOLLOW) | os.O_CLOEXEC, resolve)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        if exc.errno == errno.EXDEV:
            raise UnsafePathError(f"'{inner}' leads out of the tree",
                                  hint="paths and links in images must stay inside the image"
                                  ) from None
        if exc.errno == errno.ELOOP:
            what = "passes through a link" if mode is Mode.NOFOLLOW else \
                "has too many symlinks"
            raise UnsafePathError(f"'{inner}' {what}") from None
        raise
    if fd is None:
        return False
    try:
        return Opened(fd, _physical(rootfd, fd))
    except BaseException:
        os.close(fd)
        raise


# --- the walk: the same rules, one component at a time -----------------------------------

class _Walk:
    """The state of one walk: descriptors of the directories from the root down, the
    physical names under the root, the components left to resolve."""

    def __init__(self, rootfd: int, inner: str, mode: Mode) -> None:
        self.inner, self.mode = inner, mode
        self.parts = parts_of(inner)
        self.stack = [os.dup(rootfd)]
        self.names: list[str] = []
        self.links = 0

    def close(self) -> None:
        for fd in self.stack:
            os.close(fd)

    def up(self) -> None:
        if len(self.stack) == 1:
            raise UnsafePathError(f"'{self.inner}' climbs above the image root",
                                  hint="paths and symlinks in images must stay inside the "
                                       "image")
        os.close(self.stack.pop())
        self.names.pop()

    def follow(self, part: str) -> None:
        """Continue through the link `part` of the current directory."""
        here = "/".join([*self.names, part])
        if self.mode is Mode.NOFOLLOW:
            raise UnsafePathError(f"'{self.inner}' passes through the link {here}")
        self.links += 1
        if self.links > _MAX_LINKS:
            raise UnsafePathError(f"'{self.inner}' has too many symlinks")
        target = os.readlink(part, dir_fd=self.stack[-1])
        if target.startswith("/"):
            if self.mode is Mode.BENEATH:
                raise UnsafePathError(f"'{self.inner}' leads out of the tree (the link "
                                      f"{here} -> {target})")
            for fd in self.stack[1:]:
                os.close(fd)
            del self.stack[1:]
            self.names.clear()
        self.parts = parts_of(target) + self.parts

    def down(self, part: str) -> None:
        self.stack.append(os.open(part, _PATH_FLAGS | os.O_DIRECTORY, dir_fd=self.stack[-1]))
        self.names.append(part)


def _walk(rootfd: int, inner: str, mode: Mode, flags: int, follow_last: bool) -> Opened | None:
    walk = _Walk(rootfd, inner, mode)
    try:
        while walk.parts:
            part = walk.parts.pop(0)
            if part == "..":
                walk.up()
                continue
            if part == ".":  # the current directory (the name before it had to be one)
                continue
            try:
                info = os.stat(part, dir_fd=walk.stack[-1], follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if stat.S_ISLNK(info.st_mode) and (walk.parts or follow_last):
                walk.follow(part)
            elif not walk.parts:
                fd = os.open(part, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=walk.stack[-1])
                return Opened(fd, (*walk.names, part))
            elif stat.S_ISDIR(info.st_mode):
                walk.down(part)
            else:
                return None
        here = walk.stack[-1]
        fd = os.dup(here) if flags == _PATH_FLAGS else os.open(".", flags | os.O_CLOEXEC,
                                                                 dir_fd=here)
        return Opened(fd, tuple(walk.names))
    finally:
        walk.close()


def open_at(rootfd: int, inner: str, mode: Mode = Mode.IMAGE, flags: int = _PATH_FLAGS, *,
            follow_last: bool = True) -> Opened | None:
    """`inner` (a path in the tree; a leading '/' means its root) opened with `flags`,
    resolved by `mode`; None if it does not exist. With `follow_last` false a final link
    is opened itself (O_PATH) rather than followed."""
    if mode is not Mode.IMAGE and follow_last and _openat2_usable:
        found = _by_kernel(rootfd, inner, mode, flags)
        if found is not False:
            assert not isinstance(found, bool)
            return found
    try:
        return _walk(rootfd, inner, mode, flags, follow_last)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the final component became a link under us
            raise UnsafePathError(f"'{inner}' changed into a link while it was read") from None
        raise


def open_root(path: Path) -> int:
    """A descriptor for the tree's root, which must be a directory, not a link."""
    try:
        return os.open(path, _PATH_FLAGS | os.O_DIRECTORY)
    except FileNotFoundError:
        raise UnsafePathError(f"{path} does not exist") from None
    except OSError:
        raise UnsafePathError(f"{path} is a link or not a directory",
                              hint="a tree must be a plain directory") from None


# --- readers: host paths with no link in them ----------------------------------------------

def resolve(root: Path, inner: str, mode: Mode = Mode.IMAGE) -> Path | None:
    """Host path of `inner` (absolute in the tree), or None if it does not exist. The
    returned path holds no link; UnsafePathError when the path or a link leaves the root."""
    rootfd = open_root(root)
    try:
        found = open_at(rootfd, inner, mode)
    finally:
        os.close(rootfd)
    if found is None:
        return None
    found.close()
    return root.joinpath(*found.parts)


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


def read_at(rootfd: int, inner: str, mode: Mode, limit: int | None = None) -> bytes | None:
    """The content of the regular file `inner` (resolved by `mode`), or None when it is
    missing or not a regular file; at most `limit` bytes."""
    found = open_at(rootfd, inner, mode, _FILE_FLAGS)
    if found is None:
        return None
    try:
        if not stat.S_ISREG(os.fstat(found.fd).st_mode):
            return None
        with os.fdopen(found.fd, "rb", closefd=False) as handle:
            return handle.read() if limit is None else handle.read(limit)
    finally:
        found.close()


def read_regular(directory: Path, name: str) -> bytes | None:
    """The content of the regular file `name` in `directory`, or None if it is missing,
    a link or anything else: for files an untrusted process wrote (a link there
    would make dtk read, and perhaps show, a host file)."""
    try:
        dfd = open_root(directory)
    except UnsafePathError:
        return None
    try:
        return read_at(dfd, name, Mode.NOFOLLOW)
    except UnsafePathError:
        return None
    finally:
        os.close(dfd)


def entries(dirfd: int) -> list[tuple[str, os.stat_result]]:
    """A directory's entries (sorted) with their own, unfollowed status."""
    listing = os.open(".", _DIR_FLAGS, dir_fd=dirfd)
    try:
        names = sorted(os.listdir(listing))  # noqa: PTH208 (a descriptor, not a path)
        return [(n, os.stat(n, dir_fd=listing, follow_symlinks=False)) for n in names]
    finally:
        os.close(listing)
