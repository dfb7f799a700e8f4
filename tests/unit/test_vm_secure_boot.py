"""The Secure Boot recipe's pure parts: the qemu command line, the console watch, GRUB's
configuration, the FAT layout, variable-store and certificate checks, and MokList's bytes
(compared with what virt-fw-vars and MokManager wrote in the research's stores)."""

from __future__ import annotations

import datetime
import shlex
import struct
import uuid
from pathlib import Path

import pytest
from cryptography import x509

from dtk.errors import DtkError
from dtk.kmod import keygen
from dtk.vm import chain, esp, secureboot, varstore

DATA = Path(__file__).parent.parent / "data" / "vm"


def test_the_chain_boots_with_smm_secure_flash_and_read_only_disks(tmp_path: Path) -> None:
    spec = chain.ChainSpec(Path("/c.fd"), Path("/v.fd"), Path("/esp.img"), Path("/p.img"),
                           Path("/r.txt"))
    argv = chain.chain_argv(spec)
    line = shlex.join(argv)
    assert "-machine q35,smm=on" in line
    assert "-global driver=cfi.pflash01,property=secure,value=on" in line
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/c.fd" in line
    assert "if=pflash,format=raw,unit=1,file=/v.fd" in line  # the boot's own copy: written
    assert "if=virtio,format=raw,readonly=on,file=/esp.img" in line  # shared: never written
    assert line.index("/esp.img") < line.index("/p.img")  # the firmware boots the first
    assert argv[-2:] == ["-serial", "file:/r.txt"]
    without = chain.chain_argv(chain.ChainSpec(Path("/c"), Path("/v"), Path("/e"), None,
                                               Path("/r")))
    assert len([a for a in without if a.startswith("if=virtio")]) == 1


def test_the_console_names_the_stage_and_what_stops_the_chain() -> None:
    assert chain.stage_reached(b"") == "nothing (not one console line)"
    assert chain.stage_reached(b"BdsDxe: loading Boot0002") == "the firmware (OVMF)"
    assert chain.stage_reached(b"BdsDxe\nWelcome to GRUB!\n") == "GRUB"
    assert chain.stage_reached(b"Welcome to GRUB!\nEFI stub: UEFI Secure Boot is enabled.") \
        == "the kernel (its EFI stub)"
    grub = b"Welcome to GRUB!\n\r\n\rerror: bad shim signature.\n\rerror: you need to load"
    said = chain.fatal(grub)
    assert said.startswith("GRUB refused the kernel: it is not signed for shim")
    assert said.endswith("(console: error: bad shim signature.)")
    assert chain.fatal(b"BdsDxe: starting Boot0002\nWelcome to GRUB!\n") == ""
    assert "no payload disk" in chain.fatal(b"dtk: no payload disk (/dtk/boot.cfg)\n")
    assert chain.strip_ansi(b"\x1b[0m\x1b[37m\x1b[40mEFI stub: x\x1b[2J") == b"EFI stub: x"


def test_grub_sources_the_payload_and_boots_the_esps_kernel() -> None:
    assert "search --no-floppy --file --set=dtk_payload /dtk/boot.cfg" in esp.GRUB_CFG
    assert "source ($dtk_payload)/dtk/boot.cfg" in esp.GRUB_CFG
    cfg = esp.boot_cfg("console=ttyS0 panic=-1 dtk.x='a b'")
    assert cfg.splitlines() == ["linux /vmlinuz console=ttyS0 panic=-1 'dtk.x=a b'",
                                "initrd ($dtk_payload)/dtk/initrd.img", "boot"]


def test_fat_directories_are_made_parents_first(tmp_path: Path) -> None:
    files = [esp.FatFile("/EFI/BOOT/BOOTX64.EFI", tmp_path), esp.FatFile("/vmlinuz", tmp_path),
             esp.FatFile("/EFI/debian/grub.cfg", tmp_path)]
    assert esp.directories(files) == ["/EFI", "/EFI/BOOT", "/EFI/debian"]


def store_bytes() -> bytearray:
    """A minimal edk2 variable store of the 4 MB firmware's size (headers only)."""
    data = bytearray(varstore.STORE_SIZE)
    data[16:32] = uuid.UUID("fff12b8d-7696-4c8b-a985-2747075b4f50").bytes_le
    struct.pack_into("<Q", data, 32, varstore.STORE_SIZE)
    data[40:44] = b"_FVH"
    struct.pack_into("<H", data, 48, 72)
    data[72:88] = uuid.UUID("aaf32c78-947b-439a-a180-2e144ec37792").bytes_le
    return data


def test_a_store_is_checked_before_any_tool_reads_it() -> None:
    varstore.check_store(bytes(store_bytes()), "ok.fd")
    for broken, said in ((b"\0" * 131072, "131072 bytes"),
                         (bytes(store_bytes()[:40]) + b"XXXX" + bytes(store_bytes()[44:]),
                          "no firmware volume of variables"),
                         (bytes(store_bytes()[:72]) + b"\0" * 16 + bytes(store_bytes()[88:]),
                          "no variable store header")):
        with pytest.raises(DtkError, match=said):
            varstore.check_store(broken, "bad.fd")


def test_certificates_are_checked_for_enrolment(tmp_path: Path) -> None:
    keys = keygen.keygen(tmp_path / "k", "dtk unit MOK", days=30)
    der = varstore.check_certificate(keys.cert_pem.read_bytes(), "c.pem")
    assert der == keys.cert_der.read_bytes()  # PEM and DER give the same certificate
    assert varstore.check_certificate(der, "c.der") == der
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=60)
    with pytest.raises(DtkError, match=r"c\.pem expired on"):
        varstore.check_certificate(keys.cert_pem.read_bytes(), "c.pem", now=later)
    earlier = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    with pytest.raises(DtkError, match="valid only from"):
        varstore.check_certificate(der, "c.der", now=earlier)
    with pytest.raises(DtkError, match=r"not an X\.509 certificate"):
        varstore.check_certificate(keys.key.read_bytes(), "k.pem")


def test_mok_list_is_what_mokmanager_writes(tmp_path: Path) -> None:
    """One EFI_SIGNATURE_LIST per certificate: X.509 type, shim's GUID as owner."""
    keys = keygen.keygen(tmp_path / "k", "dtk unit MOK")
    der = keys.cert_der.read_bytes()
    esl = varstore.signature_list(der)
    assert uuid.UUID(bytes_le=esl[:16]) == uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
    size, header, entry = struct.unpack_from("<III", esl, 16)
    assert (size, header, entry) == (len(esl), 0, 16 + len(der))
    assert uuid.UUID(bytes_le=esl[28:44]) == varstore.SHIM_GUID
    assert esl[44:] == der
    other = keygen.keygen(tmp_path / "o", "another").cert_der.read_bytes()
    assert varstore.mok_list((der, other)) == esl + varstore.signature_list(other)
    assert x509.load_der_x509_certificate(esl[44:]).subject.rfc4514_string() == \
        "CN=dtk unit MOK"


def test_the_guest_says_whether_secure_boot_was_on() -> None:
    on = {"secureboot": " 06 00 00 00 01"}  # efivarfs: attributes, then the value
    assert secureboot.secure_boot_on(on)
    assert secureboot.secure_boot_problem(on) == ""
    off = {"secureboot": " 06 00 00 00 00"}
    assert "Secure Boot off" in secureboot.secure_boot_problem(off)
    assert "absent" in secureboot.secure_boot_problem({})
