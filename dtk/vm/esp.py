"""The disks a Secure Boot VM boots from, written without root: `mkfs.fat -C` creates a
FAT image in a file, mtools copies into it (no loop mount).

Two disks, so that the one that costs something is shared:

* the EFI system partition, one per kernel (and set of firmware parts), cached and
  attached read-only, so parallel boots share it:

      /EFI/BOOT/BOOTX64.EFI   shim: the firmware's removable-media path
      /EFI/BOOT/grubx64.efi   GRUB: shim starts grubx64.efi from its own directory
      /EFI/BOOT/mmx64.efi     MokManager: shim starts it when an enrolment is pending
      /EFI/debian/grub.cfg    read by the signed GRUB (its built-in prefix is /EFI/debian)
      /vmlinuz                the distribution's signed kernel

  No fbx64.efi: shim started as BOOTX64.EFI runs the fallback when it sits beside it,
  which writes boot entries and resets (a boot for nothing).

* the payload, one per boot: /dtk/boot.cfg (the kernel command line) and
  /dtk/initrd.img (the initramfs dtk already makes). GRUB finds it by that file and
  sources it, so nothing of one test is on the shared partition.

GRUB verifies the kernel through shim (an unsigned one: "bad shim signature"), not the
initramfs or the configuration, as on a real machine.
"""

from __future__ import annotations

import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from dtk import run as runner
from dtk.digest import file_digest, parts_digest
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.lock import locked
from dtk.vm.cache import vm_cache
from dtk.vm.firmware import FirmwareParts

PAYLOAD_MARK = "/dtk/boot.cfg"
_LAYOUT = "dtk-esp-1"  # bump when the ESP's files or grub.cfg change
_MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}
_SLACK_BYTES = 4 << 20

# Read from the ESP by the signed GRUB. It looks for the boot's payload disk by a file
# only that disk has and runs its commands; without one it says so (and dtk stops).
GRUB_CFG = f"""\
set timeout=0
search --no-floppy --file --set=dtk_payload {PAYLOAD_MARK}
if [ -z "$dtk_payload" ]; then
  echo "dtk: no payload disk ({PAYLOAD_MARK})"
else
  source ($dtk_payload){PAYLOAD_MARK}
fi
"""


@dataclass(frozen=True)
class FatFile:
    dest: str  # absolute path inside the FAT file system
    source: Path


def boot_cfg(cmdline: str) -> str:
    """The payload's GRUB commands: the ESP's kernel with `cmdline`, the payload's
    initramfs. Each word is quoted for GRUB's shell-like parser."""
    words = " ".join(shlex.quote(w) for w in shlex.split(cmdline))
    return (f"linux /vmlinuz {words}\n"
            "initrd ($dtk_payload)/dtk/initrd.img\n"
            "boot\n")


def esp_files(parts: FirmwareParts, vmlinuz: Path, grub_cfg: Path) -> list[FatFile]:
    return [FatFile("/EFI/BOOT/BOOTX64.EFI", parts.shim),
            FatFile("/EFI/BOOT/grubx64.efi", parts.grub),
            FatFile("/EFI/BOOT/mmx64.efi", parts.mokmanager),
            FatFile("/EFI/debian/grub.cfg", grub_cfg),
            FatFile("/vmlinuz", vmlinuz)]


def directories(files: list[FatFile]) -> list[str]:
    """Every directory the files need, parents first. Pure."""
    found: dict[str, None] = {}
    for f in files:
        parts = f.dest.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            found["/" + "/".join(parts[:depth])] = None
    return list(found)


def fat_image(out: Path, files: list[FatFile], label: str) -> Path:
    """A FAT file system (no partition table: OVMF's FAT driver takes the whole disk)
    holding `files`, sized to them; written next to `out`, then renamed into place."""
    size = sum(f.source.stat().st_size for f in files) + _SLACK_BYTES
    kib = (size + size // 8) // 1024 + 1024  # FAT's own tables and rounding
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    runner.run(["mkfs.fat", "-C", "-n", label, str(tmp), str(kib)], timeout=60,
               what=f"mkfs.fat could not create {out.name}")
    dirs = directories(files)
    if dirs:
        runner.run(["mmd", "-i", str(tmp), *(f"::{d}" for d in dirs)], env=_MTOOLS_ENV,
                   timeout=60, what=f"mmd could not make directories in {out.name}")
    for f in files:
        runner.run(["mcopy", "-i", str(tmp), str(f.source), f"::{f.dest}"], env=_MTOOLS_ENV,
                   timeout=120, what=f"mcopy could not copy {f.dest} into {out.name}")
    tmp.replace(out)
    return out


def esp_key(parts: FirmwareParts, vmlinuz: Path) -> str:
    return parts_digest(_LAYOUT, parts.key, file_digest(vmlinuz), GRUB_CFG, length=24)


def ensure_esp(parts: FirmwareParts, vmlinuz: Path) -> Path:
    """The cached ESP for this kernel image and these firmware parts."""
    target = vm_cache() / "secure-boot" / "esp" / f"{esp_key(parts, vmlinuz)}.img"
    target.parent.mkdir(parents=True, exist_ok=True)
    with locked(target.with_suffix(".lock")):
        if not target.exists():
            with tempfile.TemporaryDirectory(prefix="dtk-esp-") as tmp:
                cfg = Path(tmp) / "grub.cfg"
                cfg.write_text(GRUB_CFG)
                fat_image(target, esp_files(parts, vmlinuz, cfg), "DTK-ESP")
    return target


def write_payload(out: Path, initrd: Path, cmdline: str) -> Path:
    """One boot's payload disk: its initramfs and the command line GRUB boots with."""
    if "\n" in cmdline:
        raise DtkError("the kernel command line has a line break", hint="pass --append "
                       "as one line")
    cfg = out.with_name(out.name + ".boot.cfg")
    write_atomic(cfg, boot_cfg(cmdline).encode())
    return fat_image(out, [FatFile(PAYLOAD_MARK, cfg), FatFile("/dtk/initrd.img", initrd)],
                     "DTK-BOOT")
