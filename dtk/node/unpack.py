"""Image layers applied to a directory on the host, in Python, the way
containers/storage applies them, writing only what a node uses and refusing what
a driver image has no business holding.

Only the parts a node uses are written: the Module's dirName (its lib/modules)
and firmwarePath, what KMM's worker copies out of the image with `cp -R`. Every
entry of every layer is still read and judged, because a layer that names a
path climbing out of the image (`../`, an absolute name) is hostile whatever it
targets.

Everything goes through dtk's tree primitives (dtk.rootfs, dtk.rootwrite):
writes relative to directory descriptors, never through a link, under a
temporary name renamed over the final one. Whiteouts and opaque whiteouts act
only inside the tree, never through a link; hard links name regular files
already in the tree; device nodes, fifos, set-id bits and the names `.`, `..`,
empty or with NUL are refused. Absolute links are re-rooted into the tree (as
the image sees them), and once every layer is applied no link in the tree may
resolve outside it, so what `modprobe -d` opens is what dtk checked.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import IO

from dtk import rootfs, rootwrite
from dtk.errors import DtkError
from dtk.rootfs import UnsafePathError

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"

Parts = tuple[str, ...]


class UnsafeLayerError(DtkError):
    """A layer entry that would write outside its tree or plant something dangerous."""


def _parts(name: str, where: str) -> Parts:
    if "\0" in name:
        raise UnsafeLayerError(f"{where}: entry {name!r} has a NUL in its name")
    if name.startswith("/"):
        raise UnsafeLayerError(f"{where}: entry {name!r} has an absolute path",
                               hint="image layers hold relative paths; this one is hostile")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise UnsafeLayerError(f"{where}: entry {name!r} climbs out of the image",
                               hint="a layer that writes outside its directory is refused")
    return parts


def _wanted(parts: Parts, prefixes: Sequence[Parts]) -> bool:
    """Inside one of the prefixes, or a parent directory of one."""
    return any(parts[:len(p)] == p or p[:len(parts)] == parts for p in prefixes)


def _inside(parts: Parts, prefixes: Sequence[Parts]) -> bool:
    return any(parts[:len(p)] == p for p in prefixes)


def _existing_dir(treefd: int, parts: Parts, where: str) -> int | None:
    """The directory `parts` in the tree if it is there; refused if a link is on the way
    (a whiteout never acts through one)."""
    fd = os.dup(treefd)
    try:
        for depth, part in enumerate(parts):
            sub = rootwrite.open_dir(fd, part)
            if sub is None:
                try:
                    info = os.stat(part, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return None
                if stat.S_ISLNK(info.st_mode):
                    raise UnsafeLayerError(f"{where}: a whiteout under "
                                           f"{'/'.join(parts[:depth + 1])}, which is a link")
                return None
            os.close(fd)
            fd = sub
        found, fd = fd, -1
        return found
    finally:
        if fd >= 0:
            os.close(fd)


class _Applier:
    """One layer's entries, in order, into the tree at `treefd`."""

    def __init__(self, treefd: int, prefixes: Sequence[Parts], where: str) -> None:
        self.treefd, self.prefixes, self.where = treefd, prefixes, where
        self.written: set[Parts] = set()  # this layer's own entries: opaque keeps them

    def whiteout(self, parts: Parts) -> None:
        base = parts[-1]
        if base == _OPAQUE:
            self._opaque(parts[:-1])
            return
        name = base[len(_WHITEOUT):]
        if name in ("", ".", "..") or name.startswith(_WHITEOUT):
            raise UnsafeLayerError(f"{self.where}: whiteout {'/'.join(parts)!r} names no "
                                   "entry")
        if not _wanted((*parts[:-1], name), self.prefixes):
            return
        parent = _existing_dir(self.treefd, parts[:-1], self.where)
        if parent is not None:
            try:
                rootwrite.remove_entry(parent, name)
            finally:
                os.close(parent)

    def _opaque(self, directory: Parts) -> None:
        """Hide what lower layers put in `directory`; this layer's entries stay."""
        if not _wanted(directory, self.prefixes):
            return
        fd = _existing_dir(self.treefd, directory, self.where)
        if fd is not None:
            try:
                self._clear_lower(fd, directory)
            finally:
                os.close(fd)

    def _clear_lower(self, dirfd: int, directory: Parts) -> None:
        for name, info in rootfs.entries(dirfd):
            path = (*directory, name)
            if path not in self.written:
                rootwrite.remove_entry(dirfd, name)
            elif stat.S_ISDIR(info.st_mode):
                sub = rootwrite.open_dir(dirfd, name)
                if sub is not None:
                    try:
                        self._clear_lower(sub, path)
                    finally:
                        os.close(sub)

    def entry(self, member: tarfile.TarInfo, parts: Parts, layer: tarfile.TarFile) -> None:
        label = "/".join(parts)
        if member.mode & (stat.S_ISUID | stat.S_ISGID):
            raise UnsafeLayerError(f"{self.where}: {label} is setuid/setgid",
                                   hint="a driver image's modules and firmware need no such "
                                        "bits")
        if not (member.isdir() or member.issym() or member.islnk() or member.isfile()):
            raise UnsafeLayerError(f"{self.where}: {label} is a device node or fifo")
        try:
            parent = rootwrite.ensure_dirs(self.treefd, parts[:-1], replace=False,
                                           where=self.where)
        except UnsafePathError as exc:
            raise UnsafeLayerError(exc.message) from None
        try:
            self._write(parent, member, parts, layer)
        finally:
            os.close(parent)
        self.written.add(parts)

    def _write(self, parent: int, member: tarfile.TarInfo, parts: Parts,
               layer: tarfile.TarFile) -> None:
        name = parts[-1]
        if member.isdir():
            sub = rootwrite.open_dir(parent, name)
            if sub is None:
                rootwrite.remove_entry(parent, name)
                os.mkdir(name, 0o755, dir_fd=parent)
            else:
                os.fchmod(sub, 0o755)
                os.close(sub)
        elif member.issym():
            rootwrite.make_symlink(parent, name, link_target(parts, member.linkname,
                                                             self.where))
        elif member.islnk():
            self._hardlink(parent, name, member.linkname, "/".join(parts))
        else:
            data = layer.extractfile(member)
            assert data is not None  # a regular file's entry always has data
            rootwrite.write_stream(parent, name, data, 0o755 if member.mode & 0o111 else 0o644,
                                   member.size)

    def _hardlink(self, parent: int, name: str, linkname: str, label: str) -> None:
        source = _parts(linkname, self.where)
        src_dir = _existing_dir(self.treefd, source[:-1], self.where) if source else None
        if src_dir is None:
            raise UnsafeLayerError(f"{self.where}: hard link {label} -> {linkname} names no "
                                   "file written from the image")
        try:
            rootwrite.make_hardlink(src_dir, source[-1], parent, name)
        except (UnsafePathError, FileNotFoundError):
            raise UnsafeLayerError(f"{self.where}: hard link {label} -> {linkname} names no "
                                   "file written from the image") from None
        finally:
            os.close(src_dir)


def link_target(parts: Parts, target: str, where: str) -> str:
    """The symlink as written in the tree: an absolute target re-rooted into the tree
    (it names a path in the image), a relative one as it is (checked once every layer
    is applied, when the whole chain is known)."""
    if "\0" in target or not target:
        raise UnsafeLayerError(f"{where}: link {'/'.join(parts)} has no usable target")
    if not target.startswith("/"):
        return target
    inner = [p for p in target.split("/") if p not in ("", ".")]
    if ".." in inner:
        raise UnsafeLayerError(f"{where}: link {'/'.join(parts)} -> {target} climbs out of "
                               "the image")
    return "/".join([".."] * (len(parts) - 1) + inner) or "."


def apply_layer(treefd: int, stream: IO[bytes], prefixes: Sequence[str], where: str) -> None:
    """Apply one uncompressed tar layer to the tree at `treefd`, writing only under
    `prefixes` (paths relative to the image root, e.g. 'opt/lib/modules')."""
    wanted = [tuple(p for p in PurePosixPath(x).parts if p not in ("/", ".")) for x in prefixes]
    applier = _Applier(treefd, wanted, where)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as layer:
            for member in layer:
                parts = _parts(member.name, where)
                if not parts:
                    continue
                if parts[-1].startswith(_WHITEOUT):
                    applier.whiteout(parts)
                elif (member.isdir() and _wanted(parts, wanted)) or _inside(parts, wanted):
                    applier.entry(member, parts, layer)
    except tarfile.TarError as exc:
        raise DtkError(f"{where} is not a readable tar layer: {exc}",
                       hint="the image or archive is corrupt; fetch or save it again") from None


def check_links(treefd: int) -> None:
    """Refuse a tree with a link that resolves outside it: each link is harmless alone,
    but a chain of them can reach any host path (`a -> ../..`, `b -> a/../..`)."""
    leaving = rootwrite.links_leaving(treefd)
    if leaving:
        shown = "; ".join(leaving[:3]) + (f" (and {len(leaving) - 3} more)"
                                          if len(leaving) > 3 else "")
        raise UnsafeLayerError(f"the image's links lead out of it: {shown}",
                               hint="links in a driver image must resolve inside the image")
