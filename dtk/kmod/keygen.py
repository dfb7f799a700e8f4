"""A module-signing key and certificate fit for MOK enrolment (shim's MokManager).

What shim and the kernel need: an X.509 v3 certificate, RSA-2048 by default
(some firmware rejects larger MOK keys), CA:FALSE, digitalSignature key
usage, the codeSigning extended key usage, and a subject key identifier.
mokutil imports DER, so the certificate is written in both PEM and DER.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from dtk import paths
from dtk.errors import DtkError


@dataclass(frozen=True)
class KeyFiles:
    key: Path
    cert_pem: Path
    cert_der: Path


def make_certificate(key: rsa.RSAPrivateKey, common_name: str, days: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )


def default_dir() -> Path:
    """Where keys go unless the user says otherwise: dtk's state directory (0700),
    not the current directory, which is often a build context or a git work tree."""
    return paths.state_dir() / "keys"


def git_work_tree(directory: Path) -> Path | None:
    """The git work tree `directory` is in, if any (a key there is one `git add .` from
    being published)."""
    for parent in [directory.resolve(), *directory.resolve().parents]:
        if (parent / ".git").exists():
            return parent
    return None


def keygen(directory: Path, common_name: str, *, bits: int = 2048, days: int = 3650,
           force: bool = False) -> KeyFiles:
    files = KeyFiles(directory / "signing_key.pem", directory / "signing_cert.pem",
                     directory / "signing_cert.der")
    tree = git_work_tree(directory)
    if tree is not None and not force:
        raise DtkError(f"{directory} is inside the git work tree {tree}: a private key "
                       "there is easily committed or copied into an image",
                       hint="leave out --dir (dtk keeps keys in its state directory), or "
                            "pass --force if you mean it")
    existing = [p for p in (files.key, files.cert_pem, files.cert_der) if p.exists()]
    if existing and not force:
        raise DtkError(f"{existing[0]} already exists",
                       hint="pass --force to replace it (an enrolled key stops matching)")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    cert = make_certificate(key, common_name, days)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    # Create the key file 0600 from the start: never readable by others, not even briefly.
    files.key.unlink(missing_ok=True)
    fd = os.open(files.key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    files.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.cert_der.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return files
