"""The load decision, rule by rule, on a real module and hand-made kernel facts."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dtk.kernel import facts, symvers
from dtk.kernel.symvers import Symbol
from dtk.kmod import check as chk
from dtk.kmod import elf

CRC7 = Path(__file__).parent.parent / "data" / "kmod" / "crc7-6.1.0-56-amd64.ko"
MODULE = elf.read_module(CRC7)
STD_CONFIG = {"CONFIG_SMP": "y", "CONFIG_PREEMPT_BUILD": "y", "CONFIG_MODULE_UNLOAD": "y",
              "CONFIG_MODVERSIONS": "y", "CONFIG_MODULE_SIG": "y",
              "CONFIG_MODULE_FORCE_LOAD": "y", "CONFIG_LOCK_DOWN_IN_EFI_SECURE_BOOT": "y",
              "CONFIG_X86_64": "y"}


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
    assert codes(chk.check_module(bare, kernel(), {}), chk.Severity.TAINT) == ["no-versions"]
    strict = {k: v for k, v in STD_CONFIG.items() if k != "CONFIG_MODULE_FORCE_LOAD"}
    # without CRCs the whole vermagic is compared, which still matches here
    assert codes(chk.check_module(bare, kernel(config=strict), {})) == ["no-versions"]


def test_depends_resolve_in_tree_or_in_the_image() -> None:
    needy = dataclasses.replace(MODULE, modinfo=(
        *((k, v) for k, v in MODULE.modinfo if k != "depends"), ("depends", "usbcore,foo")))
    assert needy.depends == ["usbcore", "foo"]
    assert codes(chk.check_module(needy, kernel(), {})) == ["depends"]
    assert chk.check_module(needy, kernel(), {}, peer_modules=frozenset({"foo"})).loads


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


@pytest.mark.parametrize(("trust", "secure_boot", "expected"), [
    (chk.SignatureTrust.UNSIGNED, False, chk.Severity.TAINT),
    (chk.SignatureTrust.UNSIGNED, True, chk.Severity.REFUSE),
    (chk.SignatureTrust.UNTRUSTED, True, chk.Severity.REFUSE),
    (chk.SignatureTrust.UNTRUSTED, False, chk.Severity.TAINT),
    (chk.SignatureTrust.TRUSTED, True, chk.Severity.OK),
    (chk.SignatureTrust.UNKNOWN, True, chk.Severity.WARN),
])
def test_signature_policy(trust: chk.SignatureTrust, secure_boot: bool,
                          expected: chk.Severity) -> None:
    verdict = chk.check_module(MODULE, kernel(), {}, trust=trust,
                               policy=chk.Policy(secure_boot=secure_boot))
    assert [f.severity for f in verdict.findings if f.code == "signature"] == [expected]


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
