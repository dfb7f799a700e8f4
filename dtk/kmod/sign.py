"""Sign and verify kernel modules the way the kernel's scripts/sign-file does.

The PKCS#7 is assembled by `signature.build_pkcs7` (byte-identical to
sign-file's OpenSSL CMS output for RSA keys; ECDSA signatures are randomised,
so only their structure can match). Keys are read from PEM files and live
only in this process's memory: nothing here writes, logs or caches them.
"""

from __future__ import annotations

import gzip
import lzma
from dataclasses import dataclass
from pathlib import Path

import zstandard
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.kernel import der, keyring, modfile
from dtk.kernel import modsig as sigmod
from dtk.kmod import elf

# Every digest some kernel's PKCS#7 parser has known, as `cryptography` computes it: dtk
# verifies a signature in any of them (whether kernel K accepts it is a separate question,
# dtk.kernel.sigcrypto).
DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5, "sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512, "sha3-256": hashes.SHA3_256,
    "sha3-384": hashes.SHA3_384, "sha3-512": hashes.SHA3_512,
}
# What dtk signs with. md5 and sha1 are refused: neither resists collisions, kernels from
# 6.7 on no longer parse md5 signatures, and 6.7 and 6.8 did not parse sha1 ones.
HASHES = ("sha256", "sha384", "sha512", "sha224", "sha3-256", "sha3-384", "sha3-512")
_REFUSED = {"md5": "md5 is broken, and kernels from 6.7 on refuse md5 signatures",
            "sha1": "sha1 is broken, and kernels 6.7 and 6.8 refuse sha1 signatures"}
# Kernels before 6.7 (Debian 12's 6.1) refuse these: said when signing with one.
OLD_KERNELS_REFUSE = frozenset({"sha3-256", "sha3-384", "sha3-512"})
SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Signer:
    key: SigningKey
    cert: x509.Certificate
    hash_algo: str = "sha256"
    use_key_id: bool = False  # sign-file -k: name the signer by subject key id

    def __repr__(self) -> str:  # never print key material, even by accident
        return f"Signer(cert={self.cert.subject.rfc4514_string()!r}, hash={self.hash_algo})"


def load_key(path: Path) -> SigningKey:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DtkError(f"cannot read the signing key {path}: {exc.strerror}") from None
    return parse_key(data, str(path))


def parse_key(data: bytes, where: str) -> SigningKey:
    """A private key from PEM bytes; `where` names it in errors (never its bytes)."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise DtkError(f"{where} is not an unencrypted PEM private key",
                       hint="sign-file takes the same: openssl pkey -in KEY -out key.pem") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise DtkError(f"{where}: only RSA and ECDSA keys sign kernel modules")
    return key


# Certificates are read on the kernel floor (dtk.kernel.keyring); sign's callers (the node
# among them) keep these names.
load_cert = keyring.load_cert
parse_cert = keyring.parse_cert


def check_hash(hash_algo: str) -> None:
    """Refuse, before any work, a digest dtk does not sign with."""
    if hash_algo in _REFUSED:
        raise DtkError(f"dtk does not sign with {hash_algo}: {_REFUSED[hash_algo]}",
                       hint="sign with sha256 (what Debian's kernels sign their own modules "
                            "with)")
    if hash_algo not in HASHES:
        raise DtkError(f"unsupported hash '{hash_algo}'", hint=f"use one of {', '.join(HASHES)}")


def make_signer(key_path: Path, cert_path: Path, hash_algo: str = "sha256",
                use_key_id: bool = False) -> Signer:
    check_hash(hash_algo)
    return signer_for(load_key(key_path), load_cert(cert_path), hash_algo, use_key_id,
                      f"{key_path} is not the private key of {cert_path}")


def signer_for(key: SigningKey, cert: x509.Certificate, hash_algo: str = "sha256",
               use_key_id: bool = False, mismatch: str = "the key does not match the "
               "certificate") -> Signer:
    """A Signer from keys already in memory (KMM's key and cert Secrets)."""
    check_hash(hash_algo)
    if key.public_key().public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo) != \
            cert.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo):
        raise DtkError(mismatch)
    return Signer(key, cert, hash_algo, use_key_id)


def _skid(cert: x509.Certificate) -> bytes:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        raise DtkError("the certificate has no subject key identifier, which --key-id needs",
                       hint="sign without --key-id (issuer and serial identify the key)") from None


def pkcs7_for(content: bytes, signer: Signer) -> bytes:
    """The detached PKCS#7 sign-file would append to `content`."""
    algo = DIGESTS[signer.hash_algo]()
    if isinstance(signer.key, rsa.RSAPrivateKey):
        raw = signer.key.sign(content, padding.PKCS1v15(), algo)
        sig_oid, null_params = sigmod.OID_RSA, True
    else:
        raw = signer.key.sign(content, ec.ECDSA(algo))
        sig_oid, null_params = sigmod.ECDSA_OIDS[signer.hash_algo], False
    return sigmod.build_pkcs7(
        hash_algo=signer.hash_algo,
        issuer_and_serial=None if signer.use_key_id else _issuer_and_serial(signer.cert),
        skid=_skid(signer.cert) if signer.use_key_id else None,
        sig_algo_oid=sig_oid, sig_algo_null_params=null_params, signature=raw)


def _issuer_and_serial(cert: x509.Certificate) -> bytes:
    # TBSCertificate: [0] version, serial, signature algorithm, issuer, ...;
    # the exact bytes are copied rather than re-encoding the parsed name.
    tbs = der.parse_exact(cert.tbs_certificate_bytes).children()
    if tbs[0].tag == 0xA0:
        tbs = tbs[1:]
    return tbs[2].raw + tbs[0].raw


def sign_bytes(module: bytes, signer: Signer) -> tuple[bytes, bool]:
    """Signed module bytes, and whether an existing signature was replaced.

    sign-file would append a second signature after the first; dtk strips the
    old one so the kernel verifies exactly one.
    """
    content, old = sigmod.split(module)
    return content + sigmod.trailer(pkcs7_for(content, signer)), old is not None


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    reason: str


def verify_bytes(module: bytes, cert: x509.Certificate) -> VerifyResult:
    """Does `cert` verify the module's signature, as the kernel would with it enrolled?"""
    try:
        content, sig = sigmod.split(module)
    except sigmod.SignatureError as exc:
        return VerifyResult(False, str(exc))
    if sig is None:
        return VerifyResult(False, "unsigned")
    digest = content_digest(content, sig)
    if digest is None:
        return VerifyResult(False, f"unsupported hash {sig.hash_algo}")
    return verify_digest(sig, digest, cert)


def content_digest(content: bytes, sig: sigmod.ModuleSignature) -> bytes | None:
    """The digest the signature covers, kept instead of the module to verify it later;
    None for a digest no kernel has known."""
    algo = DIGESTS.get(sig.hash_algo)
    if algo is None:
        return None
    hasher = hashes.Hash(algo())
    hasher.update(content)
    return hasher.finalize()


def verify_digest(sig: sigmod.ModuleSignature, digest: bytes,
                  cert: x509.Certificate) -> VerifyResult:
    if not names_cert(sig.signer, cert):
        return VerifyResult(False, f"signed by '{sig.signer.issuer_cn}' key "
                                   f"{elf.colon_hex(sig.signer.key_id)}, not by this certificate")
    if sig.hash_algo not in DIGESTS:
        return VerifyResult(False, f"unsupported hash {sig.hash_algo}")
    problem = _check_value(sig.signature, digest, DIGESTS[sig.hash_algo](), cert)
    if problem:
        return VerifyResult(False, problem)
    return VerifyResult(True, f"signed by '{sig.signer.issuer_cn}' ({sig.hash_algo}), verified")


def names_cert(signer: sigmod.SignerId, cert: x509.Certificate) -> bool:
    """Does the PKCS#7 signer id name this certificate (as the kernel's keyring lookup does)?"""
    if signer.skid is not None:
        try:
            return signer.skid == _skid(cert)
        except DtkError:
            return False
    return signer.serial == cert.serial_number and \
        _issuer_and_serial(cert).startswith(signer.issuer_der)


def _check_value(value: bytes, digest: bytes, algo: hashes.HashAlgorithm,
                 cert: x509.Certificate) -> str | None:
    public = cert.public_key()
    prehashed = Prehashed(algo)
    try:
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(value, digest, padding.PKCS1v15(), prehashed)
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(value, digest, ec.ECDSA(prehashed))
        else:
            return "the certificate's key is neither RSA nor ECDSA"
    except InvalidSignature:
        return "the signature does not match the module's content"
    return None


# --- files ---------------------------------------------------------------------

def compress(data: bytes, kind: str | None) -> bytes:
    """Recompress with kbuild's settings (scripts/Makefile.modinst), which the kernel's
    in-kernel decompressor and kmod both accept."""
    if kind is None:
        return data
    if kind == "xz":  # xz --check=crc32 --lzma2=dict=1MiB: the kernel's xz needs CRC32
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                             filters=[{"id": lzma.FILTER_LZMA2, "dict_size": 1 << 20}])
    if kind == "gzip":  # gzip -n: no name, no timestamp
        return gzip.compress(data, compresslevel=6, mtime=0)
    return zstandard.ZstdCompressor(level=3).compress(data)  # zstd's default, as kbuild


def sign_file(path: Path, signer: Signer, dest: Path | None = None) -> bool:
    """Sign one module file in place (or into `dest`); True if it was signed before."""
    data, kind = modfile.read_bytes(path)
    elf.parse_module(data, str(path))  # refuse to sign something that is not a module
    signed, replaced = sign_bytes(data, signer)
    write_atomic(dest or path, compress(signed, kind))
    return replaced


def verify_file(path: Path, cert: x509.Certificate) -> VerifyResult:
    data, _kind = modfile.read_bytes(path)
    return verify_bytes(data, cert)
