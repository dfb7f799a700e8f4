"""What a host trusts for module signatures, read from its firmware and kernel.

Under Secure Boot Debian's kernels verify a module against three keyrings
(measured by booting the real chain, 6.1 and 6.12 alike): the built-in key
(`.builtin_trusted_keys`, read from /boot/vmlinuz-K by dtk.kernel.keyring),
the `.machine` keyring — every certificate in shim's MokListRT, the user's
enrolled MOKs among them — and the `.platform` keyring, the firmware's `db`
(Debian's "use the platform keyring for module signatures" patch). The
firmware's variables are EFI signature lists: MokListRT as shim mirrors it
(/sys/firmware/efi/mok-variables/MokListRT, or efivarfs), `db` and
`SecureBoot` in efivarfs. A host whose variables cannot be read (no efivarfs)
names its trusted certificates per declaration instead (`add --cert`).
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from cryptography import x509

from dtk.node.layout import Layout

EFI_GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"  # SecureBoot
SHIM = "605dab50-e046-4300-abb6-3dd810dd8b23"  # MokListRT, MokNew
IMAGE_SECURITY = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"  # db
CERT_X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")
EFIVARS = "/sys/firmware/efi/efivars"
MOK_VARIABLES = "/sys/firmware/efi/mok-variables"
_ESL_HEADER = struct.Struct("<16sIII")  # type GUID, list size, header size, signature size


def parse_esl(data: bytes) -> list[bytes]:
    """The X.509 certificates (DER) of a sequence of EFI_SIGNATURE_LISTs (UEFI 2.10
    §32.4.1); lists of other types (hashes) are skipped, a torn one ends the walk."""
    found = []
    offset = 0
    while offset + _ESL_HEADER.size <= len(data):
        kind, size, header, entry = _ESL_HEADER.unpack_from(data, offset)
        if size < _ESL_HEADER.size or offset + size > len(data) or entry <= 16:
            break
        if uuid.UUID(bytes_le=kind) == CERT_X509:
            start = offset + _ESL_HEADER.size + header
            for pos in range(start, offset + size - entry + 1, entry):
                found.append(data[pos + 16: pos + entry])  # after the owner GUID
        offset += size
    return found


@dataclass(frozen=True)
class HostKeys:
    """What the host's firmware says, as far as it can be read."""

    efi: bool  # the firmware's variables are readable (booted with UEFI, efivarfs there)
    secure_boot: bool
    moks: tuple[bytes, ...]  # MokListRT: the .machine keyring
    db: tuple[bytes, ...]  # the .platform keyring
    mok_pending: bool  # MokNew: an enrolment waits for MokManager at the next boot

    @property
    def trusted(self) -> tuple[bytes, ...]:
        return tuple(dict.fromkeys((*self.moks, *self.db)))


def _variable(layout: Layout, name: str, guid: str) -> bytes | None:
    """An efivarfs variable's data (its 4 attribute bytes dropped), or None."""
    try:
        raw = layout.host(f"{EFIVARS}/{name}-{guid}").read_bytes()
    except OSError:
        return None
    return raw[4:] if len(raw) >= 4 else None


def _mok_list(layout: Layout) -> bytes | None:
    """MokListRT as shim mirrors it (a plain file, or the variable; both hold an ESL)."""
    try:
        return layout.host(f"{MOK_VARIABLES}/MokListRT").read_bytes()
    except OSError:
        return _variable(layout, "MokListRT", SHIM)


def _certificates(data: bytes | None) -> tuple[bytes, ...]:
    out = []
    for der in parse_esl(data or b""):
        try:
            x509.load_der_x509_certificate(der)
        except ValueError:
            continue  # not a certificate the kernel would load either
        out.append(der)
    return tuple(out)


def read(layout: Layout) -> HostKeys:
    efi = layout.host(EFIVARS).is_dir()
    secure = _variable(layout, "SecureBoot", EFI_GLOBAL)
    return HostKeys(efi=efi, secure_boot=secure is not None and secure[:1] == b"\x01",
                    moks=_certificates(_mok_list(layout)),
                    db=_certificates(_variable(layout, "db", IMAGE_SECURITY)),
                    mok_pending=_variable(layout, "MokNew", SHIM) is not None)


def describe(der: bytes) -> str:
    """A certificate as a person recognises it: its subject and key id."""
    cert = x509.load_der_x509_certificate(der)
    try:
        skid = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
        key_id = skid.hex()
    except x509.ExtensionNotFound:
        key_id = f"serial {cert.serial_number:x}"
    names = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    subject = str(names[0].value) if names else cert.subject.rfc4514_string()
    return f"'{subject}' (key id {key_id})"
