"""The driver image's side of a VM: its module tree for K, read from the image.

The image is mounted once, read, and unmounted before any VM boots. The
directory to copy is found with `dtk.rootfs` (links resolved inside the image,
never out of it); below it the tree is copied without following symbolic
links, which are kept as links for the guest to resolve: an image is untrusted
input, and the KMM pattern `/opt/lib/modules/K/host -> /host/lib/modules/K`
must point into the guest, never into the host.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from dtk import rootfs
from dtk.engine import buildah
from dtk.errors import DtkError
from dtk.kernel import modfile
from dtk.vm import cpio, reach


@dataclass
class DriverTree:
    """What the image holds for one kernel."""

    release: str
    entries: list[cpio.Entry] = field(default_factory=list)
    modules: dict[str, str] = field(default_factory=dict)  # kernel name → guest path
    needs: set[str] = field(default_factory=set)  # names from the modules' depends=
    # What loading them makes modprobe or the kernel ask for (softdeps, crypto-NAME).
    requests: set[str] = field(default_factory=set)

    @property
    def in_tree_needs(self) -> list[str]:
        """Dependencies the image's own modules do not satisfy."""
        return sorted(self.needs - self.modules.keys())


@dataclass
class ImageContents:
    trees: dict[str, DriverTree]
    missing: dict[str, str]  # kernel → why there is nothing to load
    firmware: list[cpio.Entry]


def read_driver_tree(image: str, kernels: tuple[str, ...], dir_name: str,
               firmware_path: str = "") -> ImageContents:
    if image.endswith(":") or ":/" in image:
        raise DtkError(f"image name '{image}' has an empty tag: put it in single quotes so "
                       "the shell leaves ${KERNEL_FULL_VERSION} for dtk to substitute")
    if not buildah.image_exists(image):
        raise DtkError(f"image {image} is not in local container storage",
                       hint="build it with 'dtk build', or pull it with podman/skopeo")
    with buildah.working_container(image) as ctr, ctr.mounted() as root:
        return _read_root(root, kernels, dir_name, firmware_path)


def _read_root(root: Path, kernels: tuple[str, ...], dir_name: str,
               firmware_path: str) -> ImageContents:
    contents = ImageContents({}, {}, [])
    base = f"{dir_name.rstrip('/')}/lib/modules"
    present = _list_dir(root, base)
    for release in kernels:
        guest_dir = f"{base}/{release}"
        if release not in present:
            have = ", ".join(sorted(present)) or "none"
            contents.missing[release] = (f"the image has no {guest_dir} "
                                         f"(it has modules for: {have})")
            continue
        tree = DriverTree(release, _copy_tree(root, guest_dir))
        _index_modules(tree)
        if not tree.modules:
            contents.missing[release] = f"the image has no kernel module under {guest_dir}"
            continue
        contents.trees[release] = tree
    if firmware_path:
        fw = _copy_tree(root, firmware_path)
        if not fw:
            raise DtkError(f"the image has no firmware at {firmware_path}",
                           hint="--firmware-path names the firmware directory inside the image")
        # KMM's image-extractor copies <firmwarePath> to /tmp/<firmwarePath>.
        contents.firmware = [_rebase(e, "/tmp") for e in fw]
    return contents


def _list_dir(root: Path, guest_path: str) -> set[str]:
    path = rootfs.resolve(root, guest_path)
    return {p.name for p in path.iterdir() if p.is_dir() and not p.is_symlink()} \
        if path and path.is_dir() else set()


def _copy_tree(root: Path, guest_path: str) -> list[cpio.Entry]:
    top = rootfs.resolve(root, guest_path)
    if top is None or not top.is_dir():
        return []
    entries: list[cpio.Entry] = []
    for dirpath, dirnames, filenames in os.walk(top):  # never follows links
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            host = Path(dirpath) / name
            guest = f"{guest_path.rstrip('/')}/{host.relative_to(top)}"
            info = host.lstat()
            if stat.S_ISLNK(info.st_mode):
                entries.append(cpio.symlink(guest, str(host.readlink())))
            elif stat.S_ISDIR(info.st_mode):
                entries.append(cpio.directory(guest, stat.S_IMODE(info.st_mode)))
            elif stat.S_ISREG(info.st_mode):
                entries.append(cpio.file(guest, host.read_bytes(), stat.S_IMODE(info.st_mode)))
    return entries


def _index_modules(tree: DriverTree) -> None:
    for entry in tree.entries:
        if stat.S_ISREG(entry.mode) and modfile.is_module(entry.path):
            tree.modules[modfile.module_name(entry.path)] = entry.path
            tree.needs.update(modfile.peek(entry.data, entry.path).depends)
            tree.requests.update(reach.requests_of(entry.data, entry.path))


def _rebase(entry: cpio.Entry, prefix: str) -> cpio.Entry:
    return cpio.Entry(prefix + entry.path, entry.mode, entry.data, entry.rdev)
