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

from dtk.kmod import der

MAGIC = b"~Module signature appended~\n"
_TRAILER = struct.Struct(">BBBBB3xI")
ID_PKCS7 = 2
_ID_TYPES = {0: "PGP", 1: "X509", 2: "PKCS#7"}

OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_DATA = "1.2.840.113549.1.7.1"
OID_RSA = "1.2.840.113549.1.1.1"
OID_COMMON_NAME = "2.5.4.3"
HASH_OIDS = {
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
}
_HASH_BY_OID = {v: k for k, v in HASH_OIDS.items()}
_SIG_ALGO_BY_OID = {OID_RSA: "rsa", **dict.fromkeys(ECDSA_OIDS.values(), "ecdsa"),
                    "1.3.101.112": "ed25519"}


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


def split(data: bytes) -> tuple[bytes, ModuleSignature | None]:
    """The module's own bytes and its signature, if one is appended."""
    if not data.endswith(MAGIC):
        return data, None
    end = len(data) - len(MAGIC)
    if end < _TRAILER.size:
        raise SignatureError("signature magic present but the module_signature struct is cut off")
    fields = _TRAILER.unpack_from(data, end - _TRAILER.size)
    algo, hash_, id_type, signer_len, key_id_len, sig_len = fields
    start = end - _TRAILER.size - sig_len
    if start < 0:
        raise SignatureError(f"signature length {sig_len} is larger than the file")
    if id_type != ID_PKCS7:
        raise SignatureError(f"signature id type {_ID_TYPES.get(id_type, id_type)} is not "
                             "PKCS#7, the only type the kernel accepts")
    if algo or hash_ or signer_len or key_id_len:
        raise SignatureError("PKCS#7 module_signature must have algo/hash/signer/key fields zero")
    blob = data[start: end - _TRAILER.size]
    return data[:start], parse_pkcs7(blob, start)


def trailer(pkcs7: bytes) -> bytes:
    """What follows the module when `pkcs7` is appended to it."""
    return pkcs7 + _TRAILER.pack(0, 0, ID_PKCS7, 0, 0, len(pkcs7)) + MAGIC


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
    if rest and rest[0].tag == 0xA0:  # signed attributes: sign-file never writes them
        rest = rest[1:]
    sig_oid = der.decode_oid(rest[0].children()[0].value)
    signature = der.expect(rest[1], der.OCTET_STRING, "signature").value
    return ModuleSignature(
        id_type="PKCS#7", hash_algo=_HASH_BY_OID.get(hash_oid, hash_oid),
        sig_algo=_SIG_ALGO_BY_OID.get(sig_oid, sig_oid), signer=signer,
        signature=signature, pkcs7=blob, signed_length=signed_length)


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
