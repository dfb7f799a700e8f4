"""The kernel's digest rule for module signatures, per line and config, and who enforces
signatures under Secure Boot (dtk.kernel.sigcrypto). Boundaries from the kernel's history:
md4/md5 gone and sha3 in at 6.7, sha1 gone in 6.7 and 6.8 only."""

from __future__ import annotations

import pytest

from dtk.kernel import sigcrypto

ALL = {"CONFIG_CRYPTO_MD5": "y", "CONFIG_CRYPTO_SHA1": "y", "CONFIG_CRYPTO_SHA256": "y",
       "CONFIG_CRYPTO_SHA512": "m", "CONFIG_CRYPTO_SHA3": "m"}


@pytest.mark.parametrize(("release", "known", "unknown"), [
    ("6.1.0-57-amd64", {"md5", "sha1", "sha224", "sha512"}, {"sha3-256", "sha3-512"}),
    ("6.6.13-amd64", {"md5", "sha1"}, {"sha3-256"}),
    ("6.7.12-amd64", {"sha3-256", "sha256"}, {"md5", "sha1"}),
    ("6.8.1-amd64", {"sha3-384"}, {"md5", "sha1"}),
    ("6.9.2-amd64", {"sha1", "sha3-256"}, {"md5", "md4"}),
    ("6.12.118+deb12-amd64", {"sha1", "sha3-256", "sha384"}, {"md5"}),
])
def test_the_parser_knows_what_its_line_knows(release: str, known: set[str],
                                               unknown: set[str]) -> None:
    digests = sigcrypto.parser_digests(release)
    assert known <= digests
    assert not unknown & digests


def test_a_digest_needs_its_algorithm_built_in_or_as_a_module() -> None:
    assert sigcrypto.digest_verdict("6.1.0-57-amd64", ALL, "sha512").ok  # =m: request_module
    without = {**ALL, "CONFIG_CRYPTO_SHA512": "n"}
    verdict = sigcrypto.digest_verdict("6.1.0-57-amd64", without, "sha384")
    assert not verdict.ok and "CONFIG_CRYPTO_SHA512" in verdict.reason
    md5 = sigcrypto.digest_verdict("6.12.118+deb12-amd64", ALL, "md5")
    assert not md5.ok and "8468516f9f93" in md5.reason
    odd = sigcrypto.digest_verdict("6.12.118+deb12-amd64", ALL, "1.2.156.10197.1.401")
    assert not odd.ok and "no kernel's PKCS#7 parser knows" in odd.reason


def test_ecdsa_takes_sha2_and_from_67_sha3() -> None:
    assert sigcrypto.ecdsa_digest_ok("6.1.0-57-amd64", "sha384")
    assert not sigcrypto.ecdsa_digest_ok("6.1.0-57-amd64", "sha1")
    assert not sigcrypto.ecdsa_digest_ok("6.1.0-57-amd64", "sha3-256")
    assert sigcrypto.ecdsa_digest_ok("6.12.118+deb12-amd64", "sha3-256")


def test_who_enforces_and_in_which_words() -> None:
    debian = {"CONFIG_IMA": "y", "CONFIG_IMA_ARCH_POLICY": "y",
              "CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT": "y"}
    assert sigcrypto.enforcer(debian, secure_boot=False, sig_enforce=False) is None
    ima = sigcrypto.enforcer(debian, secure_boot=True, sig_enforce=False)
    assert ima is not None and "CONFIG_IMA_ARCH_POLICY" in ima.rule
    assert ima.says("unsigned module") == "Loading of unsigned module is rejected"
    lockdown = sigcrypto.enforcer({**debian, "CONFIG_IMA_ARCH_POLICY": "n"}, secure_boot=True,
                                  sig_enforce=False)
    assert lockdown is not None and lockdown.lockdown
    assert lockdown.says("module with unavailable key", "insmod") == (
        "Lockdown: insmod: unsigned module loading is restricted; see man kernel_lockdown.7")
    forced = sigcrypto.enforcer({"CONFIG_MODULE_SIG_FORCE": "y"}, secure_boot=True,
                                sig_enforce=False)
    assert forced is not None and forced.rule == "CONFIG_MODULE_SIG_FORCE"
    assert sigcrypto.enforcer({}, secure_boot=True, sig_enforce=False) is None
