"""The load decision, rule by rule, on a real module and hand-made kernel facts."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from dtk.kernel import facts, keyring, symvers
from dtk.kernel import modsig as sigmod
from dtk.kernel.symvers import Symbol
from dtk.kmod import check as chk
from dtk.kmod import elf, image, keygen, sign

CRC7 = Path(__file__).parent.parent / "data" / "kmod" / "crc7-6.1.0-56-amd64.ko"
MODULE = elf.read_module(CRC7)
STD_CONFIG = {"CONFIG_SMP": "y", "CONFIG_PREEMPT_BUILD": "y", "CONFIG_MODULE_UNLOAD": "y",
              "CONFIG_MODVERSIONS": "y", "CONFIG_MODULE_SIG": "y",
              "CONFIG_MODULE_FORCE_LOAD": "y", "CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT": "y",
              "CONFIG_X86_64": "y", "CONFIG_CRYPTO_SHA256": "y", "CONFIG_CRYPTO_SHA512": "m"}


def kernel(release: str = "6.1.0-56-amd64", config: dict[str, str] | None = None,
           symbols: dict[str, Symbol] | None = None) -> facts.KernelFacts:
    config = STD_CONFIG if config is None else config
    table = {
        "module_layout": Symbol("module_layout", 0x9060323F, "vmlinux", False, ""),
        "__x86_return_thunk": Symbol("__x86_return_thunk", 0x5B8239CA, "vmlinux", False, ""),
    } if symbols is None else symbols
    return facts.KernelFacts(release, "x86_64", facts.vermagic_from_config(release, config),
                             config, table, frozenset({"crc7", "usbcore"}), "test")


def codes(verdict: chk.Prediction, severity: chk.Severity = chk.Severity.REFUSE) -> list[str]:
    return [f.code for f in verdict.findings if f.severity is severity]


def test_vermagic_string_matches_the_kernels_for_std_and_rt() -> None:
    assert facts.vermagic_from_config("6.1.0-56-amd64", STD_CONFIG) == MODULE.vermagic
    rt = {**STD_CONFIG, "CONFIG_PREEMPT_RT": "y"}
    rt.pop("CONFIG_PREEMPT_BUILD")
    assert facts.vermagic_from_config("6.1.0-56-rt-amd64", rt) == \
        "6.1.0-56-rt-amd64 SMP preempt_rt mod_unload modversions "
    # mainline RT (6.12) keeps PREEMPT_BUILD, and its modules really say "preempt"
    rt612 = {**STD_CONFIG, "CONFIG_PREEMPT_RT": "y"}
    assert facts.vermagic_from_config("6.12.117+deb12-rt-amd64", rt612) == \
        "6.12.117+deb12-rt-amd64 SMP preempt mod_unload modversions "


def test_same_magic_ignores_the_release_only_with_crcs() -> None:
    a, b = "6.1.0-56-amd64 SMP preempt mod_unload ", "6.1.0-47-amd64 SMP preempt mod_unload "
    assert chk.same_magic(a, b, has_crcs=True)
    assert not chk.same_magic(a, b, has_crcs=False)
    assert not chk.same_magic(a, "6.1.0-56-rt-amd64 SMP preempt_rt mod_unload ", has_crcs=True)


def test_loads_on_its_own_kernel() -> None:
    verdict = chk.check_module(MODULE, kernel(), {})
    assert verdict.loads, verdict.findings


def test_refused_by_another_abi_for_module_layout() -> None:
    k = kernel("6.1.0-47-amd64")
    k.symbols["module_layout"] = Symbol("module_layout", 0x1234, "vmlinux", False, "")
    verdict = chk.check_module(MODULE, k, {})
    assert codes(verdict) == ["crc"]
    assert "disagrees about version of symbol module_layout" in verdict.refusals[0].message


def test_refused_by_rt_for_vermagic() -> None:
    rt = {**STD_CONFIG, "CONFIG_PREEMPT_RT": "y"}
    rt.pop("CONFIG_PREEMPT_BUILD")
    verdict = chk.check_module(MODULE, kernel("6.1.0-56-rt-amd64", rt), {})
    assert codes(verdict) == ["vermagic"]
    assert "preempt_rt" in verdict.refusals[0].message


def test_unknown_symbol_and_gpl_only_for_a_proprietary_module() -> None:
    assert chk.check_module(MODULE, kernel(symbols={
        "module_layout": Symbol("module_layout", 0x9060323F, "vmlinux", False, "")}), {}
    ).refusals[0].message == "Unknown symbol __x86_return_thunk"
    proprietary = dataclasses.replace(
        MODULE, modinfo=tuple((k, "Proprietary" if k == "license" else v)
                              for k, v in MODULE.modinfo))
    gpl_only = kernel()
    gpl_only.symbols["__x86_return_thunk"] = Symbol("__x86_return_thunk", 0x5B8239CA,
                                                    "vmlinux", True, "")
    assert chk.check_module(MODULE, gpl_only, {}).loads
    verdict = chk.check_module(proprietary, gpl_only, {})
    assert codes(verdict) == ["unknown-symbol"]
    assert "GPL-only" in verdict.refusals[0].message


def test_x86_global_offset_table_is_not_an_unknown_symbol() -> None:
    """simplify_symbols() skips it on x86 (ignore_undef_symbol), on no other machine."""
    got = dataclasses.replace(MODULE, undefined=(*MODULE.undefined, "_GLOBAL_OFFSET_TABLE_"))
    assert chk.check_module(got, kernel(), {}).loads
    arm = dataclasses.replace(got, machine="arm64")
    assert "Unknown symbol _GLOBAL_OFFSET_TABLE_" in [
        f.message for f in chk.check_module(arm, kernel(), {}).refusals]


def test_namespace_must_be_imported() -> None:
    k = kernel()
    k.symbols["__x86_return_thunk"] = Symbol("__x86_return_thunk", 0x5B8239CA, "vmlinux",
                                             False, "X86_NS")
    assert codes(chk.check_module(MODULE, k, {})) == ["namespace"]
    importing = dataclasses.replace(MODULE, modinfo=(*MODULE.modinfo, ("import_ns", "X86_NS")))
    assert chk.check_module(importing, k, {}).loads
    lax = kernel(config={**STD_CONFIG, "CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS": "y"},
                 symbols=k.symbols)
    assert codes(chk.check_module(MODULE, lax, {}), chk.Severity.WARN) == ["namespace"]


def test_no_versions_is_a_forced_load() -> None:
    bare = dataclasses.replace(MODULE, versions=())
    # trusted signer: the only taint left is the forced load's
    assert codes(chk.check_module(bare, kernel(), {}, trust=chk.SignatureTrust.BUILTIN),
                 chk.Severity.TAINT) == ["no-versions"]
    strict = {k: v for k, v in STD_CONFIG.items() if k != "CONFIG_MODULE_FORCE_LOAD"}
    # without CRCs the whole vermagic is compared, which still matches here
    assert codes(chk.check_module(bare, kernel(config=strict), {})) == ["no-versions"]


def test_depends_resolve_in_tree_or_in_the_image() -> None:
    needy = dataclasses.replace(MODULE, modinfo=(
        *((k, v) for k, v in MODULE.modinfo if k != "depends"), ("depends", "usbcore,foo")))
    assert needy.depends == ["usbcore", "foo"]
    assert codes(chk.check_module(needy, kernel(), {})) == ["depends"]
    assert chk.check_module(needy, kernel(), {}, peer_modules=frozenset({"foo"})).loads


def _depending_on(names: str) -> elf.KernelModule:
    return dataclasses.replace(MODULE, modinfo=(
        *((k, v) for k, v in MODULE.modinfo if k != "depends"), ("depends", names)))


def test_a_dashed_dependency_is_found_among_the_images_modules() -> None:
    """modpost writes depends=foo-core; the peer module is named foo_core."""
    needy = _depending_on("foo-core")
    assert chk.check_module(needy, kernel(), {}, peer_modules=frozenset({"foo_core"})).loads


def test_a_dependency_built_into_the_kernel_is_satisfied() -> None:
    """Real facts: Debian 6.12 cloud builds crc16 into vmlinux, 6.12 standard ships crc16.ko
    (read from the toolkits' modules.builtin); a module built on standard depends=crc16."""
    needy = _depending_on("crc16,crc-itu-t")
    cloud = dataclasses.replace(kernel(), builtin=frozenset({"crc16", "crc_itu_t"}))
    assert chk.check_module(needy, cloud, {}).loads
    assert codes(chk.check_module(needy, kernel(), {})) == ["depends", "depends"]
    # and nothing to ask of the image's modules.dep for a built-in one
    assert chk.check_module(needy, cloud, {}, depmod=frozenset({"crc7"})).loads


def test_builtin_modules_are_read_from_modules_builtin(tmp_path: Path) -> None:
    index = tmp_path / "lib" / "modules" / "6.12.117+deb12-cloud-amd64"
    index.mkdir(parents=True)
    (index / "modules.builtin").write_text("kernel/lib/crc16.ko\nkernel/lib/crc-itu-t.ko\n")
    assert facts.builtin_modules(tmp_path, "6.12.117+deb12-cloud-amd64") == \
        {"crc16", "crc_itu_t"}


def test_symbols_from_peer_modules_are_resolved_with_their_crcs() -> None:
    user = dataclasses.replace(MODULE, undefined=(*MODULE.undefined, "peer_fn"),
                               versions=(*MODULE.versions, ("peer_fn", 7)))
    assert codes(chk.check_module(user, kernel(), {})) == ["unknown-symbol"]
    good = {"peer_fn": chk.Peer("peer", elf.Export("peer_fn", False, "", 7))}
    bad = {"peer_fn": chk.Peer("peer", elf.Export("peer_fn", False, "", 8))}
    assert chk.check_module(user, kernel(), good).loads
    assert codes(chk.check_module(user, kernel(), bad)) == ["crc"]


def test_exporting_a_kernel_symbol_is_refused() -> None:
    k = kernel()
    k.symbols["crc7_be"] = Symbol("crc7_be", 1, "vmlinux", False, "")
    assert codes(chk.check_module(MODULE, k, {})) == ["duplicate-export"]


_NONE, _SB, _ENFORCE = chk.Policy(), chk.Policy(secure_boot=True), chk.Policy(sig_enforce=True)


@pytest.mark.parametrize(("trust", "policy", "expected"), [
    (chk.SignatureTrust.UNSIGNED, _NONE, chk.Severity.TAINT),
    (chk.SignatureTrust.UNSIGNED, _SB, chk.Severity.REFUSE),
    (chk.SignatureTrust.UNSIGNED, _ENFORCE, chk.Severity.REFUSE),
    (chk.SignatureTrust.UNTRUSTED, _SB, chk.Severity.REFUSE),
    (chk.SignatureTrust.UNTRUSTED, _NONE, chk.Severity.TAINT),
    (chk.SignatureTrust.TRUSTED, _SB, chk.Severity.OK),
    (chk.SignatureTrust.BUILTIN, _ENFORCE, chk.Severity.OK),
    # a signer dtk cannot place: the kernel does not have it unless it is an enrolled MOK
    (chk.SignatureTrust.UNKNOWN, _SB, chk.Severity.REFUSE),
    (chk.SignatureTrust.UNKNOWN, _ENFORCE, chk.Severity.REFUSE),
    (chk.SignatureTrust.UNKNOWN, _NONE, chk.Severity.TAINT),
    # a key the kernel has, content changed: -EKEYREJECTED is fatal, enforced or not
    (chk.SignatureTrust.REJECTED, _NONE, chk.Severity.REFUSE),
    (chk.SignatureTrust.REJECTED, _SB, chk.Severity.REFUSE),
])
def test_signature_policy(trust: chk.SignatureTrust, policy: chk.Policy,
                          expected: chk.Severity) -> None:
    verdict = chk.check_module(MODULE, kernel(), {}, trust=trust, policy=policy)
    assert [f.severity for f in verdict.findings if f.code == "signature"] == [expected]


@pytest.fixture(scope="module")
def mok(tmp_path_factory: pytest.TempPathFactory) -> sign.Signer:
    keys = keygen.keygen(tmp_path_factory.mktemp("mok"), "an enrolled MOK")
    return sign.make_signer(keys.key, keys.cert_pem)


def _signature(verdict: chk.Prediction) -> chk.Finding:
    [finding] = [f for f in verdict.findings if f.code == "signature"]
    return finding


def test_a_known_key_with_changed_content_is_refused_without_enforcement(
        mok: sign.Signer) -> None:
    """module_sig_check(): -EKEYREJECTED is not one of the tolerated errors."""
    signed, _ = sign.sign_bytes(CRC7.read_bytes(), mok)
    tampered = signed.replace(b"CRC7 calculations", b"CRC7 calculationz")
    for trust in (image.load(tampered, "crc7.ko", None, mok.cert).trust,  # the --cert
                  image.load(tampered, "crc7.ko", None, None).trust_on([mok.cert])):  # built in
        assert trust is chk.SignatureTrust.REJECTED
        finding = _signature(chk.check_module(MODULE, kernel(), {}, trust=trust))
        assert finding.severity is chk.Severity.REFUSE
        assert "Key was rejected by service" in finding.message
    assert image.load(signed, "crc7.ko", None, mok.cert).trust is chk.SignatureTrust.TRUSTED


def test_an_unknown_key_taints_and_is_rejected_only_under_enforcement(
        mok: sign.Signer, tmp_path: Path) -> None:
    other = keygen.keygen(tmp_path / "other", "someone else")
    signed, _ = sign.sign_bytes(CRC7.read_bytes(), mok)
    item = image.load(signed, "crc7.ko", None, keyring.load_cert(other.cert_pem))
    assert item.trust_on([]) is chk.SignatureTrust.UNTRUSTED
    lax = _signature(chk.check_module(item.module, kernel(), {}, trust=item.trust))
    assert lax.severity is chk.Severity.TAINT
    strict = _signature(chk.check_module(item.module, kernel(), {}, trust=item.trust,
                                         policy=_ENFORCE))
    assert strict.severity is chk.Severity.REFUSE
    assert "Loading of module with unavailable key is rejected" in strict.message


def test_secure_boot_with_a_signer_dtk_cannot_verify_asks_for_the_cert(
        mok: sign.Signer) -> None:
    signed, _ = sign.sign_bytes(CRC7.read_bytes(), mok)
    item = image.load(signed, "crc7.ko", None, None)
    assert item.trust_on([]) is chk.SignatureTrust.UNKNOWN
    verdict = chk.check_module(item.module, kernel(), {}, trust=item.trust, policy=_SB)
    assert not verdict.loads
    assert "pass --cert with the enrolled MOK certificate" in verdict.refusals[0].message


# struct module_signature, the 12 bytes before the magic: algo, hash, id_type, signer_len,
# key_id_len, __pad[3], sig_len (big-endian)
_TRAILER_AT = -len(sigmod.MAGIC) - 12


@pytest.mark.parametrize(("offset", "what"), [
    (0, "algo"), (1, "hash"), (3, "signer_len"), (4, "key_id_len"),
    (5, "__pad"), (6, "__pad"), (7, "__pad"),
])
def test_non_zero_module_signature_fields_are_refused_like_mod_check_sig(
        offset: int, what: str) -> None:
    data = bytearray(CRC7.read_bytes())
    data[len(data) + _TRAILER_AT + offset] = 1
    module = elf.parse_module(bytes(data), "crc7.ko")
    assert module.signature_problem is not None
    assert module.signature_problem.errno == "EBADMSG"
    verdict = chk.check_module(module, kernel(), {})  # no enforcement: fatal anyway
    assert codes(verdict) == ["signature"]
    message = verdict.refusals[0].message
    assert "PKCS#7 signature info has unexpected non-zero params" in message
    assert "Bad message" in message and what in message


def test_a_non_pkcs7_signature_is_unsupported_crypto_not_fatal() -> None:
    data = bytearray(CRC7.read_bytes())
    data[len(data) + _TRAILER_AT + 2] = 1  # id_type X509
    module = elf.parse_module(bytes(data), "crc7.ko")
    assert module.signature_problem is not None
    assert module.signature_problem.errno == "ENOPKG"
    assert _signature(chk.check_module(module, kernel(), {})).severity is chk.Severity.TAINT
    refused = chk.check_module(module, kernel(), {}, policy=_ENFORCE)
    assert "Loading of module with unsupported crypto is rejected" in \
        refused.refusals[0].message


def test_sig_force_enforces_without_secure_boot() -> None:
    forced = kernel(config={**STD_CONFIG, "CONFIG_MODULE_SIG_FORCE": "y"})
    verdict = chk.check_module(MODULE, forced, {}, trust=chk.SignatureTrust.UNSIGNED)
    assert codes(verdict) == ["signature"]


def test_wrong_architecture_is_refused() -> None:
    arm = dataclasses.replace(MODULE, machine="arm64")
    assert codes(chk.check_module(arm, kernel(), {})) == ["arch"]


def test_symvers_parse() -> None:
    table = symvers.parse(
        "0x84b45156\tinsert_resource_expand_to_fit\tvmlinux\tEXPORT_SYMBOL_GPL\tCXL\n"
        "0x9f28c4c0\tusb_stor_host_template_init\tdrivers/usb/storage/usb-storage\t"
        "EXPORT_SYMBOL_GPL\tUSB_STORAGE\n0x4c9d28b0\tphys_base\tvmlinux\tEXPORT_SYMBOL\t\n")
    assert table["phys_base"] == Symbol("phys_base", 0x4C9D28B0, "vmlinux", False, "")
    assert table["usb_stor_host_template_init"].module_name == "usb_storage"
    assert table["insert_resource_expand_to_fit"].namespace == "CXL"
    with pytest.raises(Exception, match="4 tab-separated"):
        symvers.parse("0x1 foo vmlinux\n")


def test_facts_round_trip_through_json() -> None:
    k = kernel()
    assert facts.KernelFacts.from_json(k.to_json()) == k


def test_struct_module_size_is_checked_from_64_on() -> None:
    assert MODULE.this_module_size == 0x380  # 6.1's struct module
    new = dataclasses.replace(kernel("6.12.117+deb12-amd64"), module_struct_size=0x500)
    verdict = chk.check_module(MODULE, new, {})
    assert codes(verdict)[0] == "struct-module"  # before module_layout, like the kernel
    old = dataclasses.replace(kernel("6.1.0-47-amd64"), module_struct_size=0x500)
    assert "struct-module" not in codes(chk.check_module(MODULE, old, {}))


def test_kmm_images_need_modules_dep_for_the_module_and_its_in_tree_deps() -> None:
    # a bare file is not loaded through modprobe -d: no depmod finding
    assert "depmod" not in codes(chk.check_module(MODULE, kernel(), {}))
    assert codes(chk.check_module(MODULE, kernel(), {}, depmod=frozenset())) == ["depmod"]
    assert chk.check_module(MODULE, kernel(), {}, depmod=frozenset({"crc7"})).loads
    needy = dataclasses.replace(MODULE, modinfo=(
        *((k, v) for k, v in MODULE.modinfo if k != "depends"), ("depends", "usbcore")))
    verdict = chk.check_module(needy, kernel(), {}, depmod=frozenset({"crc7"}))
    assert codes(verdict) == ["depmod"]
    assert "in-tree dependency usbcore" in verdict.refusals[0].message
    assert chk.check_module(needy, kernel(), {}, depmod=frozenset({"crc7", "usbcore"})).loads


def test_remedies_follow_the_refusals() -> None:
    rt = {**STD_CONFIG, "CONFIG_PREEMPT_RT": "y"}
    rt.pop("CONFIG_PREEMPT_BUILD")
    verdict = chk.check_module(MODULE, kernel("6.1.0-56-rt-amd64", rt), {},
                               trust=chk.SignatureTrust.UNSIGNED,
                               policy=chk.Policy(secure_boot=True))
    fixes = chk.remedies(verdict)
    assert len(fixes) == 2
    assert "rebuild it for 6.1.0-56-rt-amd64" in fixes[0]
    assert "dtk sign" in fixes[1]
    assert chk.remedies(chk.check_module(MODULE, kernel(), {})) == []


# What Debian's 6.1 and 6.12 configs set for the digests a module signature may use (read
# from their /boot/config-*): 6.1 builds SHA-512 and SHA-3 as modules, 6.12 builds them in.
_CRYPTO_61 = {"CONFIG_CRYPTO_MD5": "y", "CONFIG_CRYPTO_SHA1": "y", "CONFIG_CRYPTO_SHA256": "y",
              "CONFIG_CRYPTO_SHA512": "m", "CONFIG_CRYPTO_SHA3": "m", "CONFIG_IMA": "y",
              "CONFIG_IMA_ARCH_POLICY": "y"}
_CRYPTO_612 = {**_CRYPTO_61, "CONFIG_CRYPTO_SHA512": "y", "CONFIG_CRYPTO_SHA3": "y"}


def openssl_signed(module: bytes, keys: keygen.KeyFiles, md: str) -> bytes:
    """What scripts/sign-file appends for `-md`, made by OpenSSL itself (not by dtk): a
    detached CMS without attributes or certificates, struct module_signature, the magic."""
    content, _old = sigmod.split(module)
    cms = subprocess.run(
        ["openssl", "cms", "-sign", "-binary", "-noattr", "-nocerts", "-nosmimecap",
         "-outform", "DER", "-md", md, "-signer", str(keys.cert_pem), "-inkey", str(keys.key)],
        input=content, check=True, capture_output=True).stdout
    return content + sigmod.trailer(cms)


@pytest.fixture(scope="module")
def mok_keys(tmp_path_factory: pytest.TempPathFactory) -> keygen.KeyFiles:
    return keygen.keygen(tmp_path_factory.mktemp("mok-keys"), "an enrolled MOK")


# Booted on Debian's 6.1.0-57 and 6.12.118 under Secure Boot with the certificate enrolled
# (the research behind issue 25): check said "refused" for the four loaded cells.
@pytest.mark.parametrize(("release", "config", "md", "loads"), [
    ("6.1.0-57-amd64", _CRYPTO_61, "sha1", True),
    ("6.1.0-57-amd64", _CRYPTO_61, "md5", True),
    ("6.1.0-57-amd64", _CRYPTO_61, "sha3-256", False),
    ("6.1.0-57-amd64", _CRYPTO_61, "sha512", True),
    ("6.12.118+deb12-amd64", _CRYPTO_612, "sha1", True),
    ("6.12.118+deb12-amd64", _CRYPTO_612, "md5", False),
    ("6.12.118+deb12-amd64", _CRYPTO_612, "sha3-256", True),
    ("6.12.118+deb12-amd64", _CRYPTO_612, "sha256", True),
])
def test_the_digests_each_kernel_line_accepts_under_secure_boot(
        mok_keys: keygen.KeyFiles, release: str, config: dict[str, str], md: str,
        loads: bool) -> None:
    signed = openssl_signed(CRC7.read_bytes(), mok_keys, md)
    item = image.load(signed, "crc7.ko", None, keyring.load_cert(mok_keys.cert_pem))
    assert MODULE.vermagic is not None
    target = dataclasses.replace(kernel(release, {**STD_CONFIG, **config}),
                                 vermagic=MODULE.vermagic)  # the signature is the question
    verdict = chk.check_module(item.module, target, {}, trust=item.trust, policy=_SB)
    assert verdict.loads is loads, verdict.findings
    if not loads:  # the kernel's own words: the digest is checked before the key
        message = _signature(verdict).message
        assert "Loading of module with unsupported crypto is rejected" in message
        assert "Lockdown" not in message


def test_secure_boot_refusals_are_worded_as_the_kernel_logs_them() -> None:
    """Debian's kernels set module.sig_enforce under Secure Boot (IMA's arch policy), so
    module_sig_check() says 'Loading of … is rejected', not the lockdown LSM's words."""
    target = kernel(config={**STD_CONFIG, **_CRYPTO_61})
    verdict = chk.check_module(MODULE, target, {}, trust=chk.SignatureTrust.UNSIGNED,
                               policy=_SB)
    message = _signature(verdict).message
    assert "Loading of unsigned module is rejected" in message
    assert "CONFIG_IMA_ARCH_POLICY" in message
    # without IMA's arch policy, lockdown refuses it, in its own words
    bare = kernel(config={**STD_CONFIG, **_CRYPTO_61, "CONFIG_IMA_ARCH_POLICY": "n"})
    message = _signature(chk.check_module(MODULE, bare, {}, trust=chk.SignatureTrust.UNSIGNED,
                                          policy=_SB)).message
    assert "Lockdown: modprobe: unsigned module loading is restricted; see man " \
           "kernel_lockdown.7" in message


def test_facts_cached_for_other_config_keys_are_read_again(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Two lines of work each moved the cache format to 7 for different config keys and
    shared one cache: facts without CONFIG_CRYPTO_* were taken for current, and check said
    every signature was unsupported crypto. The format names the keys read."""
    monkeypatch.setenv("DTK_CACHE_DIR", str(tmp_path))
    stale = kernel().to_json() | {"format": 7}
    facts.cache_path("k").parent.mkdir(parents=True)
    facts.cache_path("k").write_text(json.dumps(stale))
    assert facts.load_cached("k") is None
    facts.store("k", kernel())
    assert facts.load_cached("k") is not None
