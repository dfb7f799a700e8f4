"""Would kernel K load this module? The kernel's own decisions, replayed without booting.

Pure: takes a parsed module, K's facts and the image's other modules, and
returns findings. The rules follow kernel/module/main.c and version.c
(6.1-6.12):

* signature (module_sig_check, mod_check_sig): unsigned, an unknown key or
  unsupported crypto (a digest K's PKCS#7 parser or crypto API lacks: see
  dtk.kernel.sigcrypto) is refused only when signatures are enforced
  (MODULE_SIG_FORCE, module.sig_enforce=1, or Secure Boot: IMA's arch policy or lockdown),
  otherwise the kernel loads the module and taints itself; a known key whose
  signature does not verify, or a malformed signature, is refused always;
* ELF machine (elf_check_arch), and since 6.4 the size of struct module
  (elf_validity_check);
* vermagic (check_modinfo / same_magic, after module_layout): with modversions (the module has
  `__versions`) only the part after the release is compared, i.e. SMP,
  preempt vs preempt_rt, mod_unload, modversions; without, the whole string;
  a missing vermagic is a forced load (taint with MODULE_FORCE_LOAD, else refused);
* module_layout (check_modstruct_version, before vermagic), then every
  undefined symbol (resolve_symbol): unknown symbol, GPL-only export used by a module whose
  license is not GPL-compatible (the kernel just says "Unknown symbol"),
  CRC mismatch ("disagrees about version of symbol"), a symbol with no CRC
  in `__versions` (a warning only), a namespace not imported;
* exports that duplicate a kernel symbol (the kernel refuses the load);
* `depends`: modprobe must find every dependency, in-tree or in the image.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dtk import kernel as kern
from dtk.kernel import sigcrypto
from dtk.kernel.facts import KernelFacts
from dtk.kernel.modfile import module_name
from dtk.kernel.verdict import Verdict
from dtk.kmod.elf import Export, KernelModule


class Severity(enum.StrEnum):
    REFUSE = "refuse"  # the kernel (or modprobe) will not load the module
    TAINT = "taint"  # it loads, and the kernel marks itself tainted
    WARN = "warn"  # it loads; something deserves a look
    OK = "ok"


@dataclass(frozen=True)
class Finding:
    severity: Severity
    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"severity": self.severity.value, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Peer:
    """An export provided by another module shipped in the same image."""

    module: str
    export: Export


class SignatureTrust(enum.StrEnum):
    UNSIGNED = "unsigned"
    TRUSTED = "trusted"  # verified against the certificate the user says is enrolled
    BUILTIN = "builtin"  # verified against a key built into the kernel
    REJECTED = "rejected"  # names a key the kernel has (built in or --cert), does not verify
    UNTRUSTED = "untrusted"  # names a key that is neither built in nor the given certificate
    UNKNOWN = "unknown"  # names a key that is not built in; no certificate given


@dataclass(frozen=True)
class Policy:
    secure_boot: bool = False  # lockdown enforces signatures (Debian: Secure Boot on)
    sig_enforce: bool = False  # module.sig_enforce=1 on the kernel command line


@dataclass(frozen=True)
class DepIndex:
    """The modules an image's modules.dep.bin resolves, as kmod's modprobe reads it."""

    names: frozenset[str]
    text_only: bool = False  # modules.dep but no modules.dep.bin: busybox's depmod
    corrupt: str = ""  # modules.dep.bin that libkmod cannot read
    # Per module name: the path its entry records and its dependencies' paths (relative to
    # the image's kernel directory, as depmod writes them).
    entries: Mapping[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # Per recorded path, where KMM's worker finds it: ("image", ""), ("node", path under
    # the node's /lib/modules/K) through a link to /lib/modules or /host/lib/modules,
    # or ("missing", why).
    resolved: Mapping[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Prediction:
    module: str
    path: str
    kernel: str
    findings: tuple[Finding, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def loads(self) -> bool:
        return not any(f.severity is Severity.REFUSE for f in self.findings)

    @property
    def refusals(self) -> list[Finding]:
        return [f for f in self.findings if f.severity is Severity.REFUSE]

    @property
    def verdict(self) -> Verdict:
        """In the words `dtk vmtest` uses for what it sees, so the two compare cell by cell."""
        return Verdict.LOADED if self.loads else Verdict.REFUSED

    def to_json(self) -> dict[str, Any]:
        return {"module": self.module, "path": self.path, "kernel": self.kernel,
                "verdict": self.verdict.value, "loads": self.loads,
                "findings": [f.to_json() for f in self.findings], **self.extra}


def same_magic(module_magic: str, kernel_magic: str, has_crcs: bool) -> bool:
    """kernel/module/version.c same_magic(): skip the release when CRCs are checked."""
    if has_crcs:
        module_magic = module_magic[len(module_magic.split(" ", 1)[0]):]
        kernel_magic = kernel_magic[len(kernel_magic.split(" ", 1)[0]):]
    return module_magic == kernel_magic


def check_module(module: KernelModule, kernel: KernelFacts, peers: Mapping[str, Peer],
                 *, peer_modules: frozenset[str] = frozenset(),
                 trust: SignatureTrust | None = None, policy: Policy = Policy(),
                 depmod: DepIndex | frozenset[str] | None = None) -> Prediction:
    """`depmod`: what the image's modules.dep.bin lists, for a module in a KMM image (None
    for a bare file, which nobody loads through modprobe -d)."""
    if isinstance(depmod, frozenset):
        depmod = DepIndex(depmod)
    trust = trust or (SignatureTrust.UNKNOWN if module.signature else SignatureTrust.UNSIGNED)
    # In the order load_module() meets them, so the first refusal is the one dmesg shows.
    findings = [
        *check_signature(module, kernel, trust, policy),
        *check_machine(module, kernel),
        *check_struct_module(module, kernel),
        *check_symbols(module, kernel, {}, names=["module_layout"]),
        *check_vermagic(module, kernel),
        *check_symbols(module, kernel, peers, names=resolved_names(module)),
        *check_duplicate_exports(module, kernel),
        *check_depends(module, kernel, peer_modules),
        *([] if depmod is None else check_depmod(module, kernel, depmod)),
    ]
    # A forced load is reported by both symbol passes; say it once.
    return Prediction(module.name, module.path, kernel.release, tuple(dict.fromkeys(findings)))


def _enforcement(kernel: KernelFacts, policy: Policy) -> sigcrypto.Enforcer | None:
    """Who refuses what module_sig_check() otherwise tolerates, or None."""
    return sigcrypto.enforcer(kernel.config, secure_boot=policy.secure_boot,
                              sig_enforce=policy.sig_enforce)


# module_sig_check()'s names for the three failures it tolerates without enforcement
# (-ENODATA, -ENOKEY, -ENOPKG); it logs "Loading of <name> is rejected" under enforcement.
_UNSIGNED, _UNAVAILABLE_KEY, _UNSUPPORTED = \
    "unsigned module", "module with unavailable key", "module with unsupported crypto"


# simplify_symbols() leaves an undefined symbol unresolved without error when it is weak or
# when ignore_undef_symbol() says so: on x86 (EM_386, EM_X86_64) that is
# _GLOBAL_OFFSET_TABLE_, which GNU as before 2.37 emits unreferenced (kernel/module/main.c,
# 6.1 and 6.12 alike).
_IGNORED_UNDEFINED = {"x86_64": frozenset({"_GLOBAL_OFFSET_TABLE_"}),
                      "i386": frozenset({"_GLOBAL_OFFSET_TABLE_"})}


def resolved_names(module: KernelModule) -> list[str]:
    """The undefined symbols the kernel must resolve for the module to load."""
    ignored = _IGNORED_UNDEFINED.get(module.machine, frozenset())
    return [n for n in module.undefined if n not in ignored]


def check_signature(module: KernelModule, kernel: KernelFacts, trust: SignatureTrust,
                    policy: Policy) -> list[Finding]:
    """kernel/module/signing.c module_sig_check() (6.1 and 6.12 alike): only an unsigned
    module, unsupported crypto and an unknown key are tolerated without enforcement; every
    other failure, above all a known key whose signature does not verify, is fatal. The
    digest is checked before the key (dtk.kernel.sigcrypto)."""
    if not kernel.enabled("CONFIG_MODULE_SIG") and not policy.secure_boot:
        return []
    sig, problem = module.signature, module.signature_problem
    signer = f"signed by '{sig.signer.issuer_cn}' ({sig.hash_algo})" if sig else "unsigned"
    if problem is not None and problem.fatal:
        return [Finding(Severity.REFUSE, "signature",
                        f"{problem.message}: {problem.strerror} (-{problem.errno}); a malformed "
                        "signature is refused even without enforcement")]
    digest = sigcrypto.digest_verdict(kernel.release, kernel.config, sig.hash_algo) \
        if sig is not None and problem is None else sigcrypto.DigestVerdict(True)
    if not digest.ok:
        return [_tolerated(module, trust, _enforcement(kernel, policy), digest)]
    if problem is None and trust is SignatureTrust.REJECTED:
        return [Finding(Severity.REFUSE, "signature",
                        f"{signer}, a key the kernel has (built in, or the enrolled --cert), but "
                        "the signature does not match the module's content: Key was rejected "
                        "by service (-EKEYREJECTED; the kernel logs no line), even without "
                        "enforcement")]
    if problem is None and trust in (SignatureTrust.TRUSTED, SignatureTrust.BUILTIN):
        return [_verified(module, kernel, trust, signer)]
    return [_tolerated(module, trust, _enforcement(kernel, policy))]


def _verified(module: KernelModule, kernel: KernelFacts, trust: SignatureTrust,
              signer: str) -> Finding:
    sig = module.signature
    assert sig is not None
    if sig.sig_algo == "ecdsa" and not sigcrypto.ecdsa_digest_ok(kernel.release, sig.hash_algo):
        return Finding(Severity.REFUSE, "signature",
                       f"{signer}: an ECDSA signature over {sig.hash_algo}, which "
                       "software_key_determine_akcipher() refuses: Invalid argument (-EINVAL), "
                       "even without enforcement")
    whose = "the certificate (enrolled: the .machine keyring from MokListRT, or .platform "\
        "from db)" if trust is SignatureTrust.TRUSTED else "the kernel's built-in key"
    return Finding(Severity.OK, "signature", f"{signer}, verified with {whose}")


def _tolerated(module: KernelModule, trust: SignatureTrust,
               enforced: sigcrypto.Enforcer | None,
               digest: sigcrypto.DigestVerdict | None = None) -> Finding:
    """A failure module_sig_check() tolerates unless signatures are enforced."""
    sig, problem = module.signature, module.signature_problem
    signer = f"signed by '{sig.signer.issuer_cn}'" if sig else ""
    hint = ""
    if digest is not None:
        reason, detail = _UNSUPPORTED, f"{signer}: {digest.reason}"
    elif problem is not None:
        reason, detail = _UNSUPPORTED, problem.message
    elif trust is SignatureTrust.UNSIGNED or sig is None:
        reason, detail = _UNSIGNED, "unsigned"
    elif trust is SignatureTrust.UNTRUSTED:
        reason, detail = _UNAVAILABLE_KEY, \
            f"{signer}, a key neither built into the kernel nor the given certificate"
    else:  # UNKNOWN: maybe an enrolled MOK, which only --cert can tell
        reason, detail = _UNAVAILABLE_KEY, f"{signer}, a key not built into the kernel"
        hint = " (if it is an enrolled MOK, pass --cert with the enrolled MOK certificate)"
    if enforced is None:
        return Finding(Severity.TAINT, "signature",
                       f"{detail}: loads but taints the kernel (E){hint}; refused when "
                       f"signatures are enforced (Loading of {reason} is rejected)")
    return Finding(Severity.REFUSE, "signature",
                   f"{detail}: {enforced.says(reason)} ({enforced.rule}){hint}")


def check_machine(module: KernelModule, kernel: KernelFacts) -> list[Finding]:
    if kernel.arch not in ("unknown", module.machine):
        return [Finding(Severity.REFUSE, "arch",
                        f"built for {module.machine}, the kernel is {kernel.arch}")]
    return []


# elf_validity_check() compares the section with sizeof(struct module) since 6.4
# (seen on real boots: 6.12 refuses a 6.1 module for it, 6.1 does not check).
_STRUCT_MODULE_CHECK_SINCE = (6, 4)


def check_struct_module(module: KernelModule, kernel: KernelFacts) -> list[Finding]:
    parsed = kern.try_parse(kernel.release)
    if (parsed is None or parsed.upstream[:2] < _STRUCT_MODULE_CHECK_SINCE
            or kernel.module_struct_size is None or module.this_module_size is None
            or module.this_module_size == kernel.module_struct_size):
        return []
    return [Finding(Severity.REFUSE, "struct-module",
                    f".gnu.linkonce.this_module is {module.this_module_size} bytes but the "
                    f"kernel's struct module is {kernel.module_struct_size}: built against "
                    "another kernel's headers")]


def check_vermagic(module: KernelModule, kernel: KernelFacts) -> list[Finding]:
    magic = module.vermagic
    if magic is None:
        if kernel.enabled("CONFIG_MODULE_FORCE_LOAD"):
            return [Finding(Severity.TAINT, "vermagic", "no vermagic: a forced load (taint F)")]
        return [Finding(Severity.REFUSE, "vermagic", "no vermagic and forced loads are off")]
    if same_magic(magic, kernel.vermagic, module.has_versions):
        return []
    scope = "flags after the release" if module.has_versions else "the whole string (no CRCs)"
    return [Finding(Severity.REFUSE, "vermagic",
                    f"version magic '{magic.strip()}' should be '{kernel.vermagic.strip()}' "
                    f"(compared: {scope})")]


def _resolve(name: str, kernel: KernelFacts, peers: Mapping[str, Peer]
             ) -> tuple[str, int | None, bool, str] | None:
    """(owner, crc, gpl_only, namespace) of whoever exports `name`, kernel first.

    The owner is the raw Module.symvers path for kernel symbols; `_owner` turns
    it into a module name only when a message needs it (this is the hot loop).
    """
    sym = kernel.symbols.get(name)
    if sym is not None:
        return sym.module, sym.crc, sym.gpl_only, sym.namespace
    peer = peers.get(name)
    if peer is not None:
        return peer.module, peer.export.crc, peer.export.gpl_only, peer.export.namespace
    return None


def _owner(module: str) -> str:
    return module if module == "vmlinux" else module_name(module)


def check_symbols(module: KernelModule, kernel: KernelFacts, peers: Mapping[str, Peer],
                  names: list[str]) -> list[Finding]:
    """Resolve `names` as resolve_symbol() does; "module_layout" is check_modstruct_version()."""
    modversions = kernel.enabled("CONFIG_MODVERSIONS")
    if "module_layout" in names and (not modversions or "module_layout" not in kernel.symbols):
        names = [n for n in names if n != "module_layout"]  # kernels without it skip the check
    allow_missing_ns = kernel.enabled("CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS")
    versions = dict(module.versions)
    gpl_ok = module.gpl_compatible
    imported_ns = module.import_ns
    findings: list[Finding] = []
    forced = False
    for name in names:
        owner = _resolve(name, kernel, peers)
        if owner is None or (owner[2] and not gpl_ok):
            why = "" if owner is None else \
                f" (GPL-only export of {_owner(owner[0])}; module license is '{module.license}')"
            findings.append(Finding(Severity.REFUSE, "unknown-symbol",
                                    f"Unknown symbol {name}{why}"))
            continue
        who, crc, _gpl, namespace = owner
        if modversions and crc is not None:
            if not module.has_versions:
                forced = True
            elif name not in versions:
                findings.append(Finding(Severity.WARN, "no-crc", f"no symbol version for {name}"))
            elif versions[name] != crc:
                findings.append(Finding(
                    Severity.REFUSE, "crc",
                    f"disagrees about version of symbol {name} (module 0x{versions[name]:08x}, "
                    f"{_owner(who)} 0x{crc:08x})"))
        if namespace and namespace not in imported_ns:
            findings.append(Finding(
                Severity.WARN if allow_missing_ns else Severity.REFUSE, "namespace",
                f"uses symbol {name} from namespace {namespace}, but does not import it "
                f"(MODULE_IMPORT_NS({namespace}))"))
    if forced:
        severity = Severity.TAINT if kernel.enabled("CONFIG_MODULE_FORCE_LOAD") \
            else Severity.REFUSE
        findings.append(Finding(severity, "no-versions",
                                "module has no __versions but the kernel checks CRCs: "
                                "a forced load"))
    return findings


def check_duplicate_exports(module: KernelModule, kernel: KernelFacts) -> list[Finding]:
    findings = []
    for export in module.exports:
        sym = kernel.symbols.get(export.name)
        if sym is None or sym.module_name == module.name:
            continue
        if sym.module == "vmlinux":
            findings.append(Finding(Severity.REFUSE, "duplicate-export",
                                    f"exports duplicate symbol {export.name} (owned by kernel)"))
        else:
            findings.append(Finding(Severity.WARN, "duplicate-export",
                                    f"exports {export.name}, also exported by in-tree "
                                    f"{sym.module_name}: the two cannot be loaded together"))
    return findings


def _modname(name: str) -> str:
    """modpost writes depends= with file names (`foo-core`); the kernel, modprobe and
    .modinfo name= spell the module `foo_core` (kmod's modname_normalize)."""
    return name.replace("-", "_")


def check_depends(module: KernelModule, kernel: KernelFacts,
                  peer_modules: frozenset[str]) -> list[Finding]:
    """modprobe must find every dependency: in-tree, in the image, or built into the kernel
    (modules.builtin, which modprobe treats as already loaded)."""
    available = kernel.modules | kernel.builtin | {_modname(p) for p in peer_modules}
    missing = [d for d in module.depends if _modname(d) not in available]
    return [Finding(Severity.REFUSE, "depends",
                    f"depends on {d}, which is neither in-tree for {kernel.release} nor in the "
                    "image (modprobe fails)") for d in missing]


def peers_of(modules: list[KernelModule]) -> tuple[dict[str, Peer], frozenset[str]]:
    """Exports and names of the modules shipped together (one image, one kernel)."""
    exports = {e.name: Peer(m.name, e) for m in modules for e in m.exports}
    return exports, frozenset(m.name for m in modules)


def check_depmod(module: KernelModule, kernel: KernelFacts, depmod: DepIndex) -> list[Finding]:
    """What KMM's `modprobe -d /opt` can resolve through the image's modules.dep.bin."""
    where = f"/opt/lib/modules/{kernel.release}"
    if depmod.text_only or depmod.corrupt:
        what = f"its modules.dep.bin is unreadable ({depmod.corrupt})" if depmod.corrupt else \
            "it has a text modules.dep but no modules.dep.bin (busybox's depmod writes only that)"
        return [Finding(Severity.REFUSE, "depmod",
                        f"kmod's `modprobe -d /opt {module.name}` reads only modules.dep.bin, and "
                        f"{what}: Module {module.name} not found in directory {where}; run "
                        f"kmod's depmod (`depmod -b /opt {kernel.release}`), not busybox's")]
    if module.name not in depmod.names:
        return [Finding(Severity.REFUSE, "depmod",
                        f"the image's modules.dep.bin (missing or stale) does not list "
                        f"{module.name}: `modprobe -d /opt {module.name}` will not find it (Module "
                        f"{module.name} not found in directory {where}; run `depmod -b /opt "
                        f"{kernel.release}` last in the Containerfile)")]
    # Refused, as on a fresh node (dtk vmtest shows "Unknown symbol"): it loads only where
    # something else already loaded the dependency.
    return [*_unresolved_paths(module, kernel, depmod), *(Finding(Severity.REFUSE, "depmod",
                    f"in-tree dependency {d} is not in the image's modules.dep.bin, so `modprobe "
                    "-d /opt` does not load it (unless the node already has it loaded)"
                    f"{_unknown_from(module, kernel, _modname(d))}: link "
                    f"/host/lib/modules/{kernel.release} into the image before depmod")
            for d in module.depends
            if _modname(d) in kernel.modules and _modname(d) not in depmod.names)]


def _unresolved_paths(module: KernelModule, kernel: KernelFacts,
                      depmod: DepIndex) -> list[Finding]:
    """Each path modules.dep.bin records for the module and its dependencies must open
    where KMM's worker runs modprobe: in the copied tree, or through a link into the
    node's /lib/modules (mounted at /lib/modules and /host/lib/modules)."""
    entry = depmod.entries.get(module.name)
    if entry is None:
        return []
    path, deps = entry
    where = f"/opt/lib/modules/{kernel.release}"
    out = []
    for rel in (path, *deps):
        kind, detail = depmod.resolved.get(rel, ("image", ""))
        if kind == "missing":
            out.append(Finding(Severity.REFUSE, "depmod-path",
                               f"modules.dep.bin records {rel} for {module.name}, which does "
                               f"not resolve where KMM's worker runs modprobe: {detail}; "
                               f"modprobe -d /opt cannot open {where}/{rel}"))
        elif kind == "node" and kernel.module_paths and detail not in kernel.module_paths:
            out.append(Finding(Severity.REFUSE, "depmod-path",
                               f"modules.dep.bin records {rel} for {module.name}, a link into "
                               f"the node's /lib/modules/{kernel.release}, which has no "
                               f"{detail}: depmod ran against another kernel's tree"))
    return out


def _unknown_from(module: KernelModule, kernel: KernelFacts, owner: str) -> str:
    """What the kernel then logs: the first symbol the module takes from `owner`."""
    for name in module.undefined:
        sym = kernel.symbols.get(name)
        if sym is not None and sym.module_name == owner:
            return f" and the kernel says Unknown symbol {name}"
    return ""


_REMEDIES = (
    (("crc", "vermagic", "struct-module", "unknown-symbol", "no-versions"),
     "built for another kernel: rebuild it for {kernel} (dtk build --kernel {kernel} …)"),
    (("signature",), "sign it (dtk sign) with a key the node trusts (dtk keygen, then "
                     "mokutil --import)"),
    (("depmod",), "run `depmod -b /opt {kernel}` last in the image, with the node's modules "
                  "linked in (/opt/lib/modules/{kernel}/host -> /host/lib/modules/{kernel})"),
    (("depmod-path",), "run depmod against {kernel}'s own modules, linked from the image's "
                       "kernel directory to /host/lib/modules/{kernel} or /lib/modules/{kernel} "
                       "(KMM's two documented layouts)"),
    (("depends",), "ship the missing modules in the image"),
    (("namespace",), "add MODULE_IMPORT_NS(…) for the namespace to the module's source"),
    (("duplicate-export",), "rename the exported symbol, or drop the copy of in-kernel code"),
    (("arch",), "build it for the node's architecture"),
)


def remedies(verdict: Prediction) -> list[str]:
    """What to do about the refusals, one line per kind of cause."""
    refused = {f.code for f in verdict.refusals}
    return [text.format(kernel=verdict.kernel) for codes, text in _REMEDIES
            if refused & set(codes)]
