"""The kernel's built-in trusted keys, read from its vmlinux.

Under Secure Boot the kernel accepts modules signed by a key in its built-in
keyring (the distribution's build key, which signs every in-tree module) or
by an enrolled MOK (what `--cert` stands for). The built-in certificates are
DER blobs in vmlinux (`system_certificate_list`); the vmlinux in a bzImage is
stripped, so they are found by their shape instead of by symbol.

Debian's kernels set no CONFIG_SYSTEM_REVOCATION_LIST, so every certificate
found is a trusted one (checked on 6.1 and 6.12: exactly one, the build key).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography import x509

from dtk import rootfs
from dtk.errors import DtkError
from dtk.kernel import bzimage

# Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version INTEGER 2, ...
_CERT_SHAPE = re.compile(rb"\x30\x82(..)\x30\x82..\xa0\x03\x02\x01\x02", re.S)


def find_certificates(blob: bytes) -> Iterator[bytes]:
    """DER X.509 certificates embedded anywhere in `blob`."""
    for match in _CERT_SHAPE.finditer(blob):
        der = blob[match.start(): match.start() + 4 + int.from_bytes(match.group(1), "big")]
        try:
            x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        yield der


def builtin_certificates(root: Path, release: str) -> tuple[bytes, ...]:
    """K's built-in certificates from /boot/vmlinuz-K in `root`; () if unknowable."""
    vmlinuz = rootfs.resolve(root, f"/boot/vmlinuz-{release}")
    if vmlinuz is None or not vmlinuz.is_file():
        return ()
    try:
        vmlinux = bzimage.extract_vmlinux(vmlinuz.read_bytes())
    except DtkError:
        return ()  # a compression dtk cannot unpack: trust then rests on --cert alone
    return tuple(dict.fromkeys(find_certificates(vmlinux)))


def load_cert(path: Path) -> x509.Certificate:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DtkError(f"cannot read the certificate {path}: {exc.strerror}") from None
    return parse_cert(data, str(path))


def parse_cert(data: bytes, where: str) -> x509.Certificate:
    """An X.509 certificate in PEM or DER; `where` names it in the error."""
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise DtkError(f"{where} is not an X.509 certificate (PEM or DER)",
                       hint="give the certificate (dtk keygen writes signing_cert.pem and "
                            ".der), not the private key or another file") from None


def validity(cert: x509.Certificate) -> tuple[datetime.datetime, datetime.datetime]:
    """(not before, not after), aware. Debian 12's python3-cryptography (38) has only the
    naive UTC properties; the `_utc` ones came with 42, and the naive ones warn there."""
    before = getattr(cert, "not_valid_before_utc", None)
    after = getattr(cert, "not_valid_after_utc", None)
    if before is None or after is None:
        return (cert.not_valid_before.replace(tzinfo=datetime.UTC),
                cert.not_valid_after.replace(tzinfo=datetime.UTC))
    return before, after


def load(ders: Sequence[bytes]) -> list[x509.Certificate]:
    return [x509.load_der_x509_certificate(d) for d in ders]
