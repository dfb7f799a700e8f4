"""The parts of a Secure Boot machine that are not the kernel, from the archive's packages.

What a Debian machine with Secure Boot boots through, file for file:

- ovmf: OVMF_CODE_4M.secboot.fd, UEFI firmware built with Secure Boot and SMM, and
  OVMF_VARS_4M.ms.fd, its variable store with Debian's PK, Microsoft's KEK and db, and
  Secure Boot on;
- shim-signed: shimx64.efi.signed, shim, signed by Microsoft's UEFI CA; it trusts
  Debian's CA and the MOKs;
- shim-helpers-amd64-signed: mmx64.efi.signed, MokManager, signed by Debian;
- grub-efi-amd64-signed: grubx64.efi.signed, GRUB, signed by Debian; it verifies the
  kernel through shim.

The packages are downloaded (signature-checked by apt) and unpacked, never installed:
nothing from them runs on the host. The files are cached under a key made of the exact
package versions and their archive checksums, so a security update of shim or GRUB is a
new set of parts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dtk import rootfs
from dtk.digest import parts_digest
from dtk.distro import debfile
from dtk.distro.aptindex import Stanza
from dtk.distro.debian import DebianArchive, make_pool
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.lock import locked
from dtk.vm.cache import vm_cache

ARCH = "amd64"  # what dtk boots: x86-64 guests
# package → {cached name: path in the package}
_FILES = {
    "ovmf": {"OVMF_CODE_4M.secboot.fd": "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
             "OVMF_VARS_4M.ms.fd": "/usr/share/OVMF/OVMF_VARS_4M.ms.fd"},
    "shim-signed": {"shimx64.efi": "/usr/lib/shim/shimx64.efi.signed"},
    "shim-helpers-amd64-signed": {"mmx64.efi": "/usr/lib/shim/mmx64.efi.signed"},
    "grub-efi-amd64-signed": {"grubx64.efi": "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"},
}
_KEY_VERSION = "dtk-secure-boot-parts-1"


@dataclass(frozen=True)
class FirmwareParts:
    """The cached files; `key` names their content (package versions and checksums)."""

    key: str
    directory: Path
    packages: tuple[str, ...]  # name=version, for people

    @property
    def code(self) -> Path:
        return self.directory / "OVMF_CODE_4M.secboot.fd"

    @property
    def vars_template(self) -> Path:
        """Debian's store with Microsoft's keys and Secure Boot on: copied, never booted."""
        return self.directory / "OVMF_VARS_4M.ms.fd"

    @property
    def shim(self) -> Path:
        return self.directory / "shimx64.efi"

    @property
    def mokmanager(self) -> Path:
        return self.directory / "mmx64.efi"

    @property
    def grub(self) -> Path:
        return self.directory / "grubx64.efi"


def resolve(archive: DebianArchive) -> list[Stanza]:
    """The newest amd64 (or all) stanza of each package, from the archive's index."""
    archive.index.update()
    pool = make_pool(s for s in archive.index.stanzas_of(sorted(_FILES))
                     if s.get("Architecture") in (ARCH, "all"))
    missing = [name for name in _FILES if name not in pool]
    if missing:
        raise DtkError(f"the archive has no {', '.join(missing)} for {ARCH}",
                       hint="Secure Boot boots need Debian's ovmf, shim-signed, "
                            "shim-helpers-amd64-signed and grub-efi-amd64-signed (main)")
    return [pool[name][0] for name in sorted(_FILES)]


def parts_key(stanzas: list[Stanza]) -> str:
    return parts_digest(_KEY_VERSION, *(f"{s['Package']}={s['Version']} {s.get('SHA256', '')}"
                                        for s in stanzas), length=24)


def ensure_parts(archive: DebianArchive) -> FirmwareParts:
    """The firmware, shim, MokManager and GRUB of the archive's current packages."""
    stanzas = resolve(archive)
    key = parts_key(stanzas)
    directory = vm_cache() / "secure-boot" / "parts" / key
    packages = tuple(f"{s['Package']}={s['Version']}" for s in stanzas)
    with locked(directory.with_suffix(".lock")):
        if not (directory / "complete").exists():
            _fetch(archive, list(packages), directory)
            write_atomic(directory / "complete", json.dumps(packages).encode())
    return FirmwareParts(key, directory, packages)


def _fetch(archive: DebianArchive, packages: list[str], directory: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="dtk-sb-parts-") as tmp:
        root = Path(tmp) / "root"
        debfile.fetch_unpacked(archive.index, packages, root, Path(tmp) / "debs")
        directory.mkdir(parents=True, exist_ok=True)
        for files in _FILES.values():
            for name, inner in files.items():
                host = rootfs.resolve(root, inner)
                if host is None or not host.is_file():
                    raise DtkError(f"{inner} is not in the unpacked packages",
                                   hint="the package's layout changed; report this to dtk")
                write_atomic(directory / name, host.read_bytes())


def copy_store(template: Path, dest: Path) -> Path:
    """A boot's own variable store: the firmware writes it (shim's SbatLevel, boot
    entries, MokManager's MokList), so a cached store is copied, never booted."""
    shutil.copyfile(template, dest)
    return dest
