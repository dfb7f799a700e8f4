"""The Secure Boot proof: Debian's 6.1 and 6.12 kernels booted the way a Secure Boot
machine boots them — OVMF with Secure Boot on and Microsoft's keys, Debian's signed shim
and GRUB, the kernel package's signed vmlinuz — with a `dtk keygen` certificate enrolled
as a MOK, each loading the same module (the kernel's own crc7.ko) signed every way that
matters, with `dtk check --secure-boot --cert` predicting each cell beside the boot.

The MOK is enrolled both ways: offline (virt-fw-vars writes MokList) and the user's way
(`mokutil --import` in a guest, then MokManager driven over the serial console); the two
stores hold the same MokList bytes and give the same verdicts, cell for cell.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from dtk import rootfs
from dtk.distro.select import open_archive
from dtk.engine import buildah
from dtk.errors import DtkError
from dtk.kernel import bzimage, modfile, modsig
from dtk.kernel.verdict import Verdict
from dtk.kmod import keygen, sign
from dtk.prove.model import Build, ModuleProof, ProveCell, ProveResult
from dtk.prove.run import prove
from dtk.toolkit.images import ToolkitImage
from dtk.vm import chain, kernels, secureboot, varstore
from dtk.vm.esp import ensure_esp, write_payload
from dtk.vm.firmware import copy_store
from dtk.vm.secureboot import Enrolment, SecureBootSpec

from .test_kmod_agreement import driver_image

pytestmark = pytest.mark.integration

# Every refusal in the words the kernel logs it (module_sig_check() under the
# module.sig_enforce IMA's arch policy sets), or, for a key the kernel has whose signature
# does not match, modprobe's only word (the kernel logs nothing).
UNSIGNED = "Loading of unsigned module is rejected"
UNKNOWN_KEY = "Loading of module with unavailable key is rejected"
UNSUPPORTED = "Loading of module with unsupported crypto is rejected"
MISMATCH = "Key was rejected by service"


@dataclass(frozen=True)
class Keys:
    mok: keygen.KeyFiles  # enrolled
    other: keygen.KeyFiles  # never enrolled

    @property
    def mok_der(self) -> bytes:
        return self.mok.cert_der.read_bytes()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    root = tmp_path_factory.mktemp("sb-keys")
    return Keys(keygen.keygen(root / "mok", "dtk test MOK"),
                keygen.keygen(root / "other", "dtk test other key"))


def in_tree_crc7(toolkit: ToolkitImage, release: str) -> bytes:
    """lib/crc7.ko as the kernel package ships it (signed by the kernel's build key)."""
    with buildah.working_container(toolkit.name) as ctr, ctr.mounted() as root:
        for name in ("crc7.ko", "crc7.ko.xz"):
            found = rootfs.resolve(root, f"/lib/modules/{release}/kernel/lib/{name}")
            if found is not None and found.is_file():
                return modfile.read_bytes(found)[0]  # Debian signs before compressing
    raise AssertionError(f"no crc7 in {toolkit.name}")


def openssl_signed(content: bytes, key: keygen.KeyFiles, md: str) -> bytes:
    """Signed by OpenSSL as scripts/sign-file signs (dtk sign refuses md5 and sha1)."""
    cms = subprocess.run(
        ["openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-nosmimecap",
         "-outform", "DER", "-md", md, "-signer", str(key.cert_pem), "-inkey", str(key.key)],
        input=content, check=True, capture_output=True).stdout
    return content + modsig.trailer(cms)


def variants(intree: bytes, keys: Keys) -> dict[str, bytes]:
    content, _debian = modsig.split(intree)
    def signed(key: keygen.KeyFiles, digest: str = "sha256") -> bytes:
        return sign.sign_bytes(content, sign.make_signer(key.key, key.cert_pem, digest))[0]
    mok = signed(keys.mok)
    at = mok.index(b"license=GPL") + len("license=")
    tampered = mok[:at] + b"g" + mok[at + 1:]  # content the signature covers
    return {"intree": intree, "mok": mok, "sha512": signed(keys.mok, "sha512"),
            "sha3-256": signed(keys.mok, "sha3-256"), "sha1": openssl_signed(content, keys.mok,
                                                                           "sha1"),
            "md5": openssl_signed(content, keys.mok, "md5"), "unsigned": content,
            "other": signed(keys.other), "tampered": tampered}


@pytest.fixture(scope="module")
def cells(toolkit_61: ToolkitImage, toolkit_612: ToolkitImage, kernel_61: str,
          kernel_612: str, keys: Keys, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[list[ProveCell]]:
    out = tmp_path_factory.mktemp("sb-cells")
    made: list[ProveCell] = []
    try:
        for toolkit, release in ((toolkit_61, kernel_61), (toolkit_612, kernel_612)):
            for name, data in variants(in_tree_crc7(toolkit, release), keys).items():
                ko = out / release / name / "crc7.ko"
                ko.parent.mkdir(parents=True)
                ko.write_bytes(data)
                image = driver_image(ko, release)
                made.append(ProveCell(name, release, image, Build.GIVEN,
                                      buildah.image_id(image), modules=("crc7",)))
        yield made
    finally:
        for cell in made:
            buildah.remove_image(cell.image)


def table(result: ProveResult) -> dict[tuple[str, str], ModuleProof]:
    found = {}
    for cell in result.cells:
        [proof] = cell.modules
        found[cell.cell.row, cell.cell.kernel] = proof
        print(f"{cell.cell.kernel:24} {cell.cell.row:9} check {proof.predicted.value:8} "
              f"boot {proof.booted.value:8} | {proof.boot_reason[:70]} | "
              f"{proof.check_reason[:70]}")
    return found


def expected(row: str, release: str) -> tuple[Verdict, str]:
    """What the research behind issue 25 booted, by kernel line: 6.1's PKCS#7 parser knows
    md5 and not sha3, 6.12's sha3 and not md5 (the 6.7 changes)."""
    new_line = not release.startswith("6.1.")
    refused = {"unsigned": UNSIGNED, "other": UNKNOWN_KEY, "tampered": MISMATCH,
               "md5": UNSUPPORTED if new_line else "", "sha3-256": "" if new_line else UNSUPPORTED}
    said = refused.get(row, "")
    return (Verdict.REFUSED, said) if said else (Verdict.LOADED, "")


def assert_proof(result: ProveResult, kernels_: tuple[str, ...]) -> dict[tuple[str, str],
                                                                          Verdict]:
    found = table(result)
    assert result.disagreements == []
    for (row, release), proof in found.items():
        verdict, said = expected(row, release)
        assert proof.booted is verdict, (row, release, proof.boot_reason)
        assert proof.predicted is verdict, (row, release, proof.check_reason)
        if said:  # the kernel's own words, in the boot's reason and in check's
            assert said in proof.boot_reason, (row, release, proof.boot_reason)
            assert said in proof.check_reason, (row, release, proof.check_reason)
    for release in kernels_:
        chain = result.secure_boot[release]
        assert chain["secure_boot"] == "on", chain
        assert "[integrity]" in chain["lockdown"], chain  # set by the kernel, from Secure Boot
        assert chain["sig_enforce"] == "Y", chain  # IMA's arch policy
    return {key: proof.booted for key, proof in found.items()}


def test_the_boot_proof_on_61_and_612_offline_and_through_mokmanager(
        cells: list[ProveCell], keys: Keys, kernel_61: str, kernel_612: str) -> None:
    kernels_ = (kernel_61, kernel_612)
    offline = SecureBootSpec((keys.mok_der,), Enrolment.OFFLINE)
    user = SecureBootSpec((keys.mok_der,), Enrolment.MOKMANAGER)
    by_offline = assert_proof(prove(cells, timeout_s=120, use_cache=False,
                                    secure_boot=offline), kernels_)
    by_mokmanager = assert_proof(prove(cells, timeout_s=120, use_cache=False,
                                       secure_boot=user), kernels_)
    assert by_offline == by_mokmanager
    # the two stores: MokList byte for byte (attributes, GUID, data)
    archive = cache(open_archive)
    stores = [secureboot.prepare(spec, archive, kernels.find_source(kernel_612, archive)).store
              for spec in (offline, user)]
    lists = [varstore.read_variables(store)["MokList"] for store in stores]
    assert lists[0] == lists[1]
    assert lists[0].data == varstore.mok_list((keys.mok_der,))


def test_vmtest_secure_boot_from_the_command_line(cells: list[ProveCell], keys: Keys,
                                                  kernel_612: str) -> None:
    """`dtk vmtest --secure-boot --enrol CERT`: one module, one boot, the chain said."""
    [mok] = [c for c in cells if c.row == "mok" and c.kernel == kernel_612]
    run = subprocess.run([sys.executable, "-m", "dtk", "vmtest", mok.image, "--kernel",
                          kernel_612, "--module", "crc7", "--secure-boot", "--enrol",
                          str(keys.mok.cert_pem)],
                         capture_output=True, text=True, timeout=900, check=False)
    print(run.stdout, run.stderr)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{kernel_612}: Secure Boot on (OVMF, shim, GRUB, signed kernel), lockdown " \
           "integrity, sig_enforce Y, MOK offline" in run.stdout
    assert max(len(line) for line in run.stdout.splitlines()) <= 120


def test_an_unsigned_kernel_and_a_silent_firmware_end_with_their_reasons(
        kernel_612: str, tmp_path: Path) -> None:
    """GRUB refusing a kernel without its Authenticode signature, and OVMF without SMM
    (which prints nothing): each boot ends at once, saying why, not at the timeout."""
    archive = cache(open_archive)
    source = kernels.find_source(kernel_612, archive)
    prepared = secureboot.prepare(SecureBootSpec(), archive, source)
    with kernels.using_kernel(source, archive) as parts:
        image = parts.signed_image.read_bytes()
    assert bzimage.authenticode_signed(image)
    unsigned = tmp_path / "vmlinuz"
    unsigned.write_bytes(strip_authenticode(image))
    assert not bzimage.authenticode_signed(unsigned.read_bytes())
    # what dtk's own boots say before GRUB would (KernelParts keep the image as vmlinuz)
    with pytest.raises(DtkError, match=r"carries no Authenticode signature") as refused:
        secureboot.require_signed(kernels.KernelParts(source, tmp_path / "vmlinux", True,
                                                      tmp_path))
    assert "not -unsigned" in (refused.value.hint or "")
    esp = ensure_esp(prepared.firmware, unsigned)
    initrd = tmp_path / "initrd"
    initrd.write_bytes(b"")
    payload = write_payload(tmp_path / "payload.img", initrd, "console=ttyS0")
    spec = chain.ChainSpec(prepared.firmware.code, copy_store(
        prepared.store, tmp_path / "vars.fd"), esp, payload, tmp_path / "result")
    end = chain.boot(spec, timeout_s=600, console_log=tmp_path / "grub.log")
    print(end)
    assert "bad shim signature" in end.stopped, end
    silent = chain.ChainSpec(spec.code, copy_store(
        prepared.store, tmp_path / "vars2.fd"), esp, payload, tmp_path / "result2",
        machine="q35,smm=off")
    end = chain.boot(silent, timeout_s=600, console_log=tmp_path / "silent.log",
                                watch=chain.Watch(silent_s=20))
    print(end)
    assert "the firmware printed nothing in 20 s" in end.stopped, end


def strip_authenticode(image: bytes) -> bytes:
    """The kernel image without its signature: the certificate table emptied and cut off,
    as an -unsigned package's vmlinuz is."""
    pe = struct.unpack_from("<I", image, 0x3C)[0]
    table = pe + 24 + 112 + 4 * 8
    offset, _size = struct.unpack_from("<II", image, table)
    stripped = bytearray(image[:offset])
    struct.pack_into("<II", stripped, table, 0, 0)
    return bytes(stripped)
