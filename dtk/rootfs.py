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
