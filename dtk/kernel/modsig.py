"""The signature appended to a kernel module, read and written as the kernel does.

Layout (include/linux/module_signature.h): the module's bytes, then a PKCS#7
SignedData (DER, detached), then `struct module_signature` (12 bytes:
algo, hash, id_type, signer_len, key_id_len, 3 pad bytes, sig_len as
big-endian u32), then the magic string. For PKCS#7 (id_type 2) only
id_type and sig_len are set; everything else lives inside the PKCS#7.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dtk.kernel import der

MAGIC = b"~Module signature appended~\n"
_TRAILER = struct.Struct(">BBBBB3sI")  # __pad[3] is read: the kernel checks it
ID_PKCS7 = 2
_ID_TYPES = {0: "PGP", 1: "X509", 2: "PKCS#7"}

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_DATA = "1.2.840.113549.1.7.1"
OID_RSA = "1.2.840.113549.1.1.1"
OID_COMMON_NAME = "2.5.4.3"
HASH_OIDS = {
    "md4": "1.2.840.113549.2.4",
    "md5": "1.2.840.113549.2.5",
    "sha1": "1.3.14.3.2.26",
    "sha224": "2.16.840.1.101.3.4.2.4",
    "sha256": "2.16.840.1.101.3.4.2.1",
    "sha384": "2.16.840.1.101.3.4.2.2",
    "sha512": "2.16.840.1.101.3.4.2.3",
    "sha3-256": "2.16.840.1.101.3.4.2.8",
    "sha3-384": "2.16.840.1.101.3.4.2.9",
    "sha3-512": "2.16.840.1.101.3.4.2.10",
}
ECDSA_OIDS = {
    "sha224": "1.2.840.10045.4.3.1",
    "sha256": "1.2.840.10045.4.3.2",
    "sha384": "1.2.840.10045.4.3.3",
    "sha512": "1.2.840.10045.4.3.4",
    "sha3-256": "2.16.840.1.101.3.4.3.10",
    "sha3-384": "2.16.840.1.101.3.4.3.11",
    "sha3-512": "2.16.840.1.101.3.4.3.12",
}
_ECDSA_WITH_SHA1 = "1.2.840.10045.4.1"  # read (the kernel's parser knows it), never written
_HASH_BY_OID = {v: k for k, v in HASH_OIDS.items()}
_SIG_ALGO_BY_OID = {OID_RSA: "rsa", **dict.fromkeys(ECDSA_OIDS.values(), "ecdsa"),
                    _ECDSA_WITH_SHA1: "ecdsa", "1.3.101.112": "ed25519"}


class SignatureError(ValueError):
    """The appended signature is malformed."""


@dataclass(frozen=True)
class SignerId:
    """How the PKCS#7 names its signer: issuer + serial, or a subject key id."""

    issuer_der: bytes  # empty when identified by subject key id
    issuer_cn: str
    serial: int | None
    skid: bytes | None

    @property
    def key_id(self) -> bytes:
        """What `modinfo` prints as sig_key: the serial's bytes, or the SKID."""
        if self.skid is not None:
            return self.skid
        assert self.serial is not None
        if self.serial < 0:  # DER allows it (a crafted or broken signature); bytes as stored
            return self.serial.to_bytes((self.serial.bit_length() + 8) // 8, "big", signed=True)
        return self.serial.to_bytes(max(1, (self.serial.bit_length() + 7) // 8), "big")


@dataclass(frozen=True)
class ModuleSignature:
    id_type: str
    hash_algo: str
    sig_algo: str
    signer: SignerId
    signature: bytes  # the raw signature value inside the SignerInfo
    pkcs7: bytes
    signed_length: int  # bytes of the module covered by the signature
    has_authattrs: bool = False  # sign-file never writes signed attributes
    data_type: str = OID_DATA  # the encapsulated content type


@dataclass(frozen=True)
class SignatureProblem:
    """Why the kernel's mod_verify_sig() fails before it looks for a key.

    `errno` decides whether the failure is fatal (module_sig_check): ENOPKG
    (unsupported crypto) is tolerated without enforcement like an unsigned
    module; EBADMSG (a malformed signature) refuses the module always.
    """

    errno: str
    message: str  # the kernel's pr_err() wording, or dtk's where the kernel logs nothing

    @property
    def fatal(self) -> bool:
        return self.errno != "ENOPKG"

    @property
    def strerror(self) -> str:
        """What modprobe prints for the error (`could not insert 'x': …`)."""
        return _STRERROR[self.errno]


_STRERROR = {"EBADMSG": "Bad message", "ENOPKG": "Package not installed",
             "EKEYREJECTED": "Key was rejected by service"}


@dataclass(frozen=True)
class Appended:
    """A module's bytes split as mod_verify_sig() splits them."""

    content: bytes
    signature: ModuleSignature | None
    problem: SignatureProblem | None = None  # signature marker present, but unusable


def mod_check_sig(data: bytes) -> SignatureProblem | None:
    """kernel/module_signature.c mod_check_sig() on `data` without its magic, plus
    mod_verify_sig()'s length test before it."""
    if len(data) <= _TRAILER.size:
        return SignatureProblem(
            "EBADMSG", "signature marker present but struct module_signature is cut off")
    algo, hash_, id_type, signer_len, key_id_len, pad, sig_len = \
        _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    if sig_len >= len(data) - _TRAILER.size:  # no message from the kernel for this one
        return SignatureProblem("EBADMSG", f"signature length {sig_len} does not fit in the "
                                           "module")
    if id_type != ID_PKCS7:
        return SignatureProblem("ENOPKG", "module: not signed with expected PKCS#7 message "
                                          f"(id type {_ID_TYPES.get(id_type, id_type)})")
    if algo or hash_ or signer_len or key_id_len or pad != b"\0\0\0":
        return SignatureProblem(
            "EBADMSG", "module: PKCS#7 signature info has unexpected non-zero params "
                       f"(algo {algo}, hash {hash_}, signer_len {signer_len}, key_id_len "
                       f"{key_id_len}, __pad {pad.hex()})")
    return None


def read(data: bytes) -> Appended:
    """Split off the signature, mirroring mod_verify_sig() (kernel/module/signing.c,
    the same in 6.1 and 6.12)."""
    if not data.endswith(MAGIC):
        return Appended(data, None)
    end = len(data) - len(MAGIC)
    problem = mod_check_sig(data[:end])
    if problem is not None:
        return Appended(data, None, problem)
    (sig_len,) = struct.unpack_from(">I", data, end - 4)
    start = end - _TRAILER.size - sig_len
    try:
        sig = parse_pkcs7(data[start: end - _TRAILER.size], start)
    except SignatureError as exc:  # pkcs7_parse_message(): the ASN.1 decoder says -EBADMSG
        return Appended(data[:start], None, SignatureProblem("EBADMSG", str(exc)))
    # pkcs7_verify() (crypto/asymmetric_keys/pkcs7_verify.c) refuses these for modules with
    # -EKEYREJECTED before it looks for the key: fatal, like a bad signature.
    if sig.data_type != OID_DATA:
        return Appended(data[:start], sig, SignatureProblem(
            "EKEYREJECTED", "Invalid module sig (not pkcs7-data)"))
    if sig.has_authattrs:
        return Appended(data[:start], sig, SignatureProblem(
            "EKEYREJECTED", "Invalid module sig (has authattrs)"))
    return Appended(data[:start], sig)


def split(data: bytes) -> tuple[bytes, ModuleSignature | None]:
    """The module's own bytes and its signature, if one is appended (malformed: an error)."""
    appended = read(data)
    if appended.problem is not None and appended.signature is None:  # cannot even split it
        raise SignatureError(appended.problem.message)
    return appended.content, appended.signature


def trailer(pkcs7: bytes) -> bytes:
    """What follows the module when `pkcs7` is appended to it."""
    return pkcs7 + _TRAILER.pack(0, 0, ID_PKCS7, 0, 0, b"\0\0\0", len(pkcs7)) + MAGIC


def parse_pkcs7(blob: bytes, signed_length: int) -> ModuleSignature:
    try:
        return _parse_pkcs7(blob, signed_length)
    except (der.DerError, IndexError) as exc:
        raise SignatureError(f"the PKCS#7 signature is corrupt: {exc}") from None


def _parse_pkcs7(blob: bytes, signed_length: int) -> ModuleSignature:
    content_info = der.expect(der.parse_exact(blob), der.SEQUENCE, "ContentInfo").children()
    if der.decode_oid(der.expect(content_info[0], der.OID, "contentType").value) \
            != OID_SIGNED_DATA:
        raise der.DerError("not a PKCS#7 SignedData")
    signed_data = der.expect(content_info[1], 0xA0, "content").children()[0].children()
    signer_infos = [c for c in signed_data if c.tag == der.SET][-1].children()
    if len(signer_infos) != 1:
        raise der.DerError(f"{len(signer_infos)} signers; the kernel expects exactly one")
    info = signer_infos[0].children()
    signer = _signer_id(info[1])
    hash_oid = der.decode_oid(info[2].children()[0].value)
    rest = info[3:]
    authattrs = bool(rest) and rest[0].tag == 0xA0
    if authattrs:
        rest = rest[1:]
    encap = signed_data[2].children()  # version, digestAlgorithms, encapContentInfo
    sig_oid = der.decode_oid(rest[0].children()[0].value)
    signature = der.expect(rest[1], der.OCTET_STRING, "signature").value
    return ModuleSignature(
        id_type="PKCS#7", hash_algo=_HASH_BY_OID.get(hash_oid, hash_oid),
        sig_algo=_SIG_ALGO_BY_OID.get(sig_oid, sig_oid), signer=signer,
        signature=signature, pkcs7=blob, signed_length=signed_length,
        has_authattrs=authattrs, data_type=der.decode_oid(encap[0].value))


def _signer_id(sid: der.Tlv) -> SignerId:
    if sid.tag == 0x80:  # [0] IMPLICIT SubjectKeyIdentifier
        return SignerId(b"", "", None, sid.value)
    issuer, serial = der.expect(sid, der.SEQUENCE, "IssuerAndSerialNumber").children()
    return SignerId(issuer.raw, common_name(issuer), der.decode_int(serial.value), None)


def common_name(name: der.Tlv) -> str:
    """The last CN of an X.501 Name, as kmod's modinfo prints it for `signer`."""
    cn = ""
    for rdn in name.children():
        for atv in rdn.children():
            kind, value = atv.children()
            if der.decode_oid(kind.value) == OID_COMMON_NAME:
                cn = value.value.decode("utf-8", "replace")
    return cn


def build_pkcs7(*, hash_algo: str, issuer_and_serial: bytes | None, skid: bytes | None,
                sig_algo_oid: str, sig_algo_null_params: bool, signature: bytes) -> bytes:
    """SignedData as OpenSSL's CMS writes it for sign-file's flags.

    sign-file uses CMS_NOCERTS | CMS_NOATTR | CMS_BINARY | CMS_DETACHED |
    CMS_NOSMIMECAP: no certificates, no signed attributes, no content. The
    digest AlgorithmIdentifier has no parameters; rsaEncryption has NULL.
    `issuer_and_serial` is the certificate's own issuer and serial encodings,
    concatenated, so that they match whatever the certificate holds.
    """
    digest_alg = der.seq(der.oid(HASH_OIDS[hash_algo]))
    sig_alg = der.seq(der.oid(sig_algo_oid), *([der.null()] if sig_algo_null_params else []))
    if skid is not None:
        version, sid = 3, der.encode(0x80, skid)
    else:
        assert issuer_and_serial is not None
        version, sid = 1, der.seq(issuer_and_serial)
    signer_info = der.seq(der.integer(version), sid, digest_alg, sig_alg, der.octets(signature))
    signed_data = der.seq(der.integer(version), der.set_of(digest_alg),
                          der.seq(der.oid(OID_DATA)), der.set_of(signer_info))
    return der.seq(der.oid(OID_SIGNED_DATA), der.explicit(0, signed_data))
