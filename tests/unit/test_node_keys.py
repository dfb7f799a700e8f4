"""What a host trusts for module signatures, read as the kernel presents its firmware's
variables (issue 25 §2).

The firmware's variables are written here in the shape efivarfs and shim's
mok-variables present them (4 attribute bytes, then an EFI signature list), from
certificates made here: this host booted without UEFI, so no real ones exist to read.
The node VM test reads a real firmware's.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import struct
import uuid
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from dtk.cli.main import run_cli
from dtk.errors import DtkError
from dtk.kmod.keygen import make_certificate
from dtk.node import enroll, hostkeys
from dtk.node.layout import Layout

SHA256_GUID = uuid.UUID("c1c41626-504c-4092-aca9-41f936934328")


def cert(name: str, days: int = 30) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return make_certificate(key, name, days).public_bytes(Encoding.DER)


def esl(ders: list[bytes], kind: uuid.UUID = hostkeys.CERT_X509) -> bytes:
    """EFI_SIGNATURE_LISTs (UEFI 2.10 §32.4.1), one per certificate, owner = shim."""
    out = b""
    for der in ders:
        entry = uuid.UUID(hostkeys.SHIM).bytes_le + der
        out += struct.pack("<16sIII", kind.bytes_le, 28 + len(entry), 0, len(entry)) + entry
    return out


def variable(root: Path, name: str, guid: str, data: bytes) -> None:
    path = root / hostkeys.EFIVARS.lstrip("/") / f"{name}-{guid}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x07\x00\x00\x00" + data)


def test_the_hosts_keys_as_the_firmware_presents_them(tmp_path: Path) -> None:
    mok, other, db = cert("My MOK"), cert("Second MOK"), cert("A db key")
    assert hostkeys.read(Layout(tmp_path)) == hostkeys.HostKeys(False, False, (), (), False)
    variable(tmp_path, "SecureBoot", hostkeys.EFI_GLOBAL, b"\x01")
    # MokListRT: shim's plain mirror wins over the variable; a hash list is skipped.
    hashes_list = esl([b"\x00" * 32], SHA256_GUID)
    mirror = tmp_path / hostkeys.MOK_VARIABLES.lstrip("/") / "MokListRT"
    mirror.parent.mkdir(parents=True)
    mirror.write_bytes(esl([mok]) + hashes_list + esl([other]))
    variable(tmp_path, "MokListRT", hostkeys.SHIM, esl([db]))
    variable(tmp_path, "db", hostkeys.IMAGE_SECURITY, esl([db]) + b"\x01torn")
    keys = hostkeys.read(Layout(tmp_path))
    assert keys.efi and keys.secure_boot and not keys.mok_pending
    assert keys.moks == (mok, other) and keys.db == (db,)
    assert keys.trusted == (mok, other, db)
    assert hostkeys.describe(mok).startswith("'My MOK' (key id ")


def test_enrolment_states_and_refusals(tmp_path: Path) -> None:
    """What `status` says after `enroll`: pending while MokNew waits, enrolled once the
    certificate is in MokListRT, not enrolled when MokManager dropped the request."""
    layout = Layout(tmp_path)
    mine = cert("Owner's key")
    assert enroll.state(layout)[0] is enroll.State.NONE
    (tmp_path / "var/lib/dtk").mkdir(parents=True)
    (tmp_path / "var/lib/dtk/enrollment.json").write_text(json.dumps({
        "fingerprint": "sha256:" + hashlib.sha256(mine).hexdigest(), "subject": "CN=x",
        "staged_at": "t"}))
    variable(tmp_path, "MokNew", hostkeys.SHIM, esl([mine]))
    assert enroll.state(layout)[0] is enroll.State.PENDING
    (tmp_path / hostkeys.EFIVARS.lstrip("/") / f"MokNew-{hostkeys.SHIM}").unlink()
    assert enroll.state(layout)[0] is enroll.State.NOT_ENROLLED
    assert "run dtk node enroll again" in enroll.next_step(enroll.State.NOT_ENROLLED, None)
    variable(tmp_path, "MokListRT", hostkeys.SHIM, esl([mine]))
    assert enroll.state(layout)[0] is enroll.State.ENROLLED


def test_a_certificate_is_checked_before_anything_is_staged(tmp_path: Path) -> None:
    good = tmp_path / "good.der"
    good.write_bytes(cert("ok"))
    assert enroll.certificate(good) == good.read_bytes()
    pem = tmp_path / "good.pem"
    pem.write_bytes(x509.load_der_x509_certificate(good.read_bytes()).public_bytes(
        Encoding.PEM))
    assert enroll.certificate(pem) == good.read_bytes()
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(DtkError, match=r"is not an X\.509 certificate"):
        enroll.certificate(junk)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")])
    now = datetime.datetime.now(datetime.UTC)
    old = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
           .public_key(key.public_key()).serial_number(1)
           .not_valid_before(now - datetime.timedelta(days=30))
           .not_valid_after(now - datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    expired = tmp_path / "old.der"
    expired.write_bytes(old.public_bytes(Encoding.DER))
    with pytest.raises(DtkError, match="expired on"):
        enroll.certificate(expired)


def test_enrol_acts_only_on_the_machine_and_only_with_efi(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "good.der"
    good.write_bytes(cert("ok"))
    with pytest.raises(DtkError, match="not the running machine"):
        enroll.stage(Layout(tmp_path), good.read_bytes(), None)
    code = run_cli(["node", "enroll", str(tmp_path / "missing.der")])
    assert code == 2
    code = run_cli(["node", "keys", "--root", str(tmp_path), "--json"])
    out = capsys.readouterr().out
    assert code == 0 and '"efi": false' in out
