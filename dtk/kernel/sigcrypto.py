"""What kernel K's module signature check accepts, and in whose words it refuses. Pure.

The digest rule, in the order mod_verify_sig() meets it (crypto/asymmetric_keys/,
kernel/module/signing.c):

1. pkcs7_parse_message(): pkcs7_sig_note_digest_algo() turns the SignerInfo's digest OID
   into a name or logs "Unsupported digest algo: N" and fails with -ENOPKG. The names it
   knows changed in 6.7 (Dimitri John Ledkov's series):
   - md4, md5 removed: 8468516f9f93 "crypto: pkcs7 - remove md4 md5 x.509 support";
   - sha1 removed: 16ab7cb5825f, and restored in 6.9 by 203a6763ab69 ("Revert
     'crypto: pkcs7 - remove sha1 support'", it broke iwd), later backported to 6.7.y and
     6.8.y stable updates, which a release string cannot tell apart: 6.7 and 6.8 are
     taken as without it;
   - sha3-256/384/512 added: fdb4f66c9545 "crypto: asymmetric_keys - allow FIPS 202
     SHA-3 signatures";
   - sha224, sha256, sha384, sha512 on every line; sm3 and streebog only with SM2 and
     EC-RDSA keys, which module signing with RSA or ECDSA never uses.
2. pkcs7_digest(): crypto_alloc_shash() of that name; an algorithm the kernel has not
   got (-ENOENT) is -ENOPKG too. It is there when its CONFIG_CRYPTO_* option is y, or m
   (the kernel's request_module("crypto-NAME") loads it from /lib/modules).
3. Only then is the signer's key looked up (pkcs7_validate_trust), so an unsupported
   digest is "unsupported crypto" whoever signed. An ECDSA signature is checked against
   software_key_determine_akcipher()'s list (sha224..sha512, sha3-* from fdb4f66c9545):
   another digest with a key the kernel has is -EINVAL, which module_sig_check() never
   tolerates.

Under Secure Boot, what enforces signatures (and so whose words a refusal is in):
IMA's arch policy (security/integrity/ima/ima_efi.c arch_get_ima_policy(): with
CONFIG_IMA_ARCH_POLICY and Secure Boot on it calls set_module_sig_enforced()), which makes
module_sig_check() log "Loading of <what> is rejected"; without it, the lockdown LSM
(CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT) refuses with "Lockdown: <comm>: unsigned module
loading is restricted; see man kernel_lockdown.7". Booted: Debian's 6.1 and 6.12 have
both, and say the former (sig_enforce reads Y).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

# The crypto API algorithm behind each digest name, as Kconfig builds it.
_CONFIG_OF = {
    "md4": "CONFIG_CRYPTO_MD4", "md5": "CONFIG_CRYPTO_MD5", "sha1": "CONFIG_CRYPTO_SHA1",
    "sha224": "CONFIG_CRYPTO_SHA256", "sha256": "CONFIG_CRYPTO_SHA256",
    "sha384": "CONFIG_CRYPTO_SHA512", "sha512": "CONFIG_CRYPTO_SHA512",
    "sha3-256": "CONFIG_CRYPTO_SHA3", "sha3-384": "CONFIG_CRYPTO_SHA3",
    "sha3-512": "CONFIG_CRYPTO_SHA3",
}
CONFIG_KEYS = (*dict.fromkeys(_CONFIG_OF.values()), "CONFIG_IMA", "CONFIG_IMA_ARCH_POLICY",
               "CONFIG_CRYPTO_ECDSA")

_SHA2 = ("sha224", "sha256", "sha384", "sha512")
_SHA3 = ("sha3-256", "sha3-384", "sha3-512")
_SHA3_SINCE = (6, 7)
_MD_UNTIL = (6, 7)  # md4, md5 known before this
_NO_SHA1 = ((6, 7), (6, 8))
_WHY = {
    **dict.fromkeys(("md4", "md5"), "not known to the kernel's PKCS#7 parser from 6.7 on "
                                    "(8468516f9f93 removed md4 and md5)"),
    "sha1": "not known to the kernel's PKCS#7 parser in 6.7 and 6.8 (16ab7cb5825f, "
            "restored in 6.9 by 203a6763ab69)",
    **dict.fromkeys(_SHA3, "known to the kernel's PKCS#7 parser only from 6.7 on "
                           "(fdb4f66c9545)"),
}


def _line(release: str) -> tuple[int, int]:
    """The upstream line a release string starts with (6.12.118+deb12-amd64 → (6, 12)).
    A distribution that backports these changes (RHEL does) may differ from its line."""
    found = re.match(r"(\d+)\.(\d+)", release)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def parser_digests(release: str) -> frozenset[str]:
    """The digest names pkcs7_sig_note_digest_algo() of `release`'s line knows."""
    line = _line(release)
    known = set(_SHA2)
    if line < _MD_UNTIL:
        known |= {"md4", "md5"}
    if line not in _NO_SHA1:
        known.add("sha1")
    if line >= _SHA3_SINCE:
        known |= set(_SHA3)
    return frozenset(known)


@dataclass(frozen=True)
class DigestVerdict:
    """Whether a signature's digest gets past the kernel's parser and crypto API."""

    ok: bool
    reason: str = ""  # why not, naming the kernel's rule
    logged: str = ""  # what the kernel logs about it, if anything


def digest_verdict(release: str, config: Mapping[str, str], digest: str) -> DigestVerdict:
    """Step 1 and 2 of the rule for a signature whose digest is `digest` (dtk's name for
    it: md5, sha1, sha256, sha3-256, …; an OID in dotted form for one dtk cannot name)."""
    if digest not in parser_digests(release):
        why = _WHY.get(digest, "a digest no kernel's PKCS#7 parser knows")
        return DigestVerdict(False, f"the signature's digest {digest} is {why}",
                             "PKCS7: Unknown OID … / Unsupported digest algo")
    option = _CONFIG_OF[digest]
    if config.get(option) not in ("y", "m"):
        return DigestVerdict(False, f"the signature's digest {digest} needs {option}, which "
                                    f"{release} does not set (crypto_alloc_shash fails)")
    return DigestVerdict(True)


def ecdsa_digest_ok(release: str, digest: str) -> bool:
    """software_key_determine_akcipher(): the digests an ECDSA signature may use."""
    return digest in _SHA2 or (_line(release) >= _SHA3_SINCE and digest in _SHA3)


def crypto_module_request(digest: str) -> str | None:
    """The name the kernel asks modprobe for when the digest's algorithm is a module."""
    return f"crypto-{digest}" if digest in _CONFIG_OF else None


@dataclass(frozen=True)
class Enforcer:
    """What refuses what module_sig_check() would otherwise tolerate, and how it says so."""

    rule: str  # the kernel's rule, for people
    lockdown: bool  # the lockdown LSM's words, not module_sig_check()'s

    def says(self, what: str, comm: str = "modprobe") -> str:
        """The line the kernel logs refusing a module: `what` is module_sig_check()'s
        name for the failure ("unsigned module", "module with unavailable key", …)."""
        if self.lockdown:
            return (f"Lockdown: {comm}: unsigned module loading is restricted; see man "
                    "kernel_lockdown.7")
        return f"Loading of {what} is rejected"


def enforcer(config: Mapping[str, str], *, secure_boot: bool,
             sig_enforce: bool) -> Enforcer | None:
    """Who enforces module signatures on a kernel with `config`, booted as said; None:
    nobody (unsigned modules load and taint the kernel)."""
    if config.get("CONFIG_MODULE_SIG_FORCE") == "y":
        return Enforcer("CONFIG_MODULE_SIG_FORCE", lockdown=False)
    if sig_enforce:
        return Enforcer("module.sig_enforce=1", lockdown=False)
    if not secure_boot:
        return None
    if config.get("CONFIG_IMA") == "y" and config.get("CONFIG_IMA_ARCH_POLICY") == "y":
        return Enforcer("module.sig_enforce, set under Secure Boot by IMA's arch policy "
                        "(CONFIG_IMA_ARCH_POLICY)", lockdown=False)
    if config.get("CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT") == "y":
        return Enforcer("lockdown, from Secure Boot (CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT)",
                        lockdown=True)
    return None
