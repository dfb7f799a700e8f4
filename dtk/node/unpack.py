"""Image layers into a directory on the host, in Python, refusing what a driver
image has no business holding.

Only the parts a node uses are written: the Module's dirName (its
lib/modules) and firmwarePath, what KMM's worker copies out of the image with
`cp -R`. Of the rest nothing lands on the host. Every entry of every layer is
still read and judged, because a layer that names a path climbing out of the
image (`../`, an absolute name) is hostile whatever it targets, and whiteouts
anywhere must be applied in order.

Refused: names that climb out; in the parts written, device nodes and fifos,
setuid/setgid bits, relative links that climb above the tree, hard links to
entries that were not written. Absolute symlinks are re-rooted into the tree
(as the image sees them: KMM images link `…/host` to `/host/lib/modules/K`),
so no link written here points at the host.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import IO

from dtk.errors import DtkError

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


class UnsafeLayerError(DtkError):
    """A layer entry that would write outside its tree or plant something dangerous."""


def _parts(name: str, where: str) -> tuple[str, ...]:
    pure = PurePosixPath(name)
    if pure.is_absolute():
        raise UnsafeLayerError(f"{where}: entry {name!r} has an absolute path",
                               hint="image layers hold relative paths; this one is hostile")
    parts = tuple(p for p in pure.parts if p not in ("", "."))
    if ".." in parts:
        raise UnsafeLayerError(f"{where}: entry {name!r} climbs out of the image",
                               hint="a layer that writes outside its directory is refused")
    return parts


def _wanted(parts: tuple[str, ...], prefixes: Sequence[tuple[str, ...]]) -> bool:
    """Inside one of the prefixes, or a parent directory of one."""
    return any(parts[:len(p)] == p or p[:len(parts)] == parts for p in prefixes)


def _inside(parts: tuple[str, ...], prefixes: Sequence[tuple[str, ...]]) -> bool:
    return any(parts[:len(p)] == p for p in prefixes)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _whiteout(tree: Path, parts: tuple[str, ...]) -> bool:
    """Apply an OCI whiteout entry; True if it was one."""
    base = parts[-1]
    if base == _OPAQUE:
        directory = tree.joinpath(*parts[:-1])
        if directory.is_dir() and not directory.is_symlink():
            for child in directory.iterdir():
                _remove(child)
        return True
    if base.startswith(_WHITEOUT):
        _remove(tree.joinpath(*parts[:-1], base[len(_WHITEOUT):]))
        return True
    return False


def _link_target(parts: tuple[str, ...], target: str, where: str) -> str:
    """The symlink as written in the tree: absolute targets re-rooted, relative ones
    kept only if they stay inside the tree."""
    depth = len(parts) - 1
    if target.startswith("/"):
        inner = _parts(target.lstrip("/"), where) if target.strip("/") else ()
        return "/".join([".."] * depth + list(inner)) or "."
    level = depth
    for part in PurePosixPath(target).parts:
        level += -1 if part == ".." else (0 if part == "." else 1)
        if level < 0:
            raise UnsafeLayerError(f"{where}: link {'/'.join(parts)} -> {target} points "
                                   "outside the image")
    return target


def _entry(tree: Path, member: tarfile.TarInfo, parts: tuple[str, ...],
           layer: IO[bytes] | tarfile.TarFile, where: str) -> None:
    path = tree.joinpath(*parts)
    label = "/".join(parts)
    if member.mode & (stat.S_ISUID | stat.S_ISGID):
        raise UnsafeLayerError(f"{where}: {label} is setuid/setgid",
                               hint="a driver image's modules and firmware need no such bits")
    if member.ischr() or member.isblk() or member.isfifo():
        raise UnsafeLayerError(f"{where}: {label} is a device node or fifo")
    for depth in range(1, len(parts)):
        if tree.joinpath(*parts[:depth]).is_symlink():
            raise UnsafeLayerError(f"{where}: {label} would be written through the link "
                                   f"{'/'.join(parts[:depth])}")
    if path.is_symlink() or (path.exists() and not member.isdir()):
        _remove(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if member.isdir():
        path.mkdir(exist_ok=True)
        path.chmod(0o755)
    elif member.issym():
        path.symlink_to(_link_target(parts, member.linkname, where))
    elif member.islnk():
        source = tree.joinpath(*_parts(member.linkname, where))
        if not source.is_file() or source.is_symlink():
            raise UnsafeLayerError(f"{where}: hard link {label} -> {member.linkname} names "
                                   "no file written from the image")
        os.link(source, path)
    elif member.isfile():
        assert isinstance(layer, tarfile.TarFile)
        data = layer.extractfile(member)
        assert data is not None
        with path.open("wb") as out:
            shutil.copyfileobj(data, out)
        path.chmod(0o755 if member.mode & 0o111 else 0o644)


def apply_layer(tree: Path, stream: IO[bytes], prefixes: Sequence[str], where: str) -> None:
    """Apply one uncompressed tar layer to `tree`, writing only under `prefixes`
    (paths relative to the image root, e.g. 'opt/lib/modules')."""
    wanted = [tuple(p for p in PurePosixPath(x).parts if p not in ("/", ".")) for x in prefixes]
    try:
        with tarfile.open(fileobj=stream, mode="r|") as layer:
            for member in layer:
                parts = _parts(member.name, where)
                if not parts or _whiteout(tree, parts):
                    continue
                if (member.isdir() and _wanted(parts, wanted)) or _inside(parts, wanted):
                    _entry(tree, member, parts, layer, where)
    except tarfile.TarError as exc:
        raise DtkError(f"{where} is not a readable tar layer: {exc}",
                       hint="the image or archive is corrupt; fetch or save it again") from None
