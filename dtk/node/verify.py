"""Would kernel K, as this host has it, load the modules of an unpacked image?

`dtk check`'s rules (dtk.kmod.check) against facts read from the host's own
files for K (dtk.kernel.installed: /boot/vmlinuz-K, /boot/config-K,
/lib/modules/K). Without headers the host has no Module.symvers, so the
exports of in-tree modules come from the modules themselves, only for those
the image's modules depend on (and what they depend on): reading all of K's
few thousand modules would cost minutes on a small machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography import x509

from dtk import rootfs
from dtk.errors import DtkError
from dtk.kernel import depindex, installed, keyring, modfile, modules_dep
from dtk.kernel.facts import KernelFacts
from dtk.kernel.symvers import Symbol
from dtk.kmod import check as chk
from dtk.kmod import elf, sign
from dtk.kmod.check import SignatureTrust
from dtk.kmod.image import ImageModules, Loaded, depmod_index, modules_from_root
from dtk.kmod.targets import check_target


@dataclass(frozen=True)
class ModuleVerdict:
    """One module file of the image, as K would take it."""

    module: str
    loads: bool
    reason: str  # the first refusal, or what it taints, or "loads"


def with_in_tree_exports(facts: KernelFacts, root: Path, names: Iterable[str]) -> KernelFacts:
    """`facts` plus the exports of the in-tree modules `names` need (modules.dep)."""
    wanted = [n for n in names if n in facts.modules]
    if not wanted:
        return facts
    dep_file = rootfs.resolve(root, f"/lib/modules/{facts.release}/modules.dep")
    if dep_file is None or not dep_file.is_file():
        return facts
    index = modules_dep.parse_modules_dep(dep_file.read_text(errors="replace"))
    symbols = dict(facts.symbols)
    for rel in index.closure(wanted):
        host = rootfs.resolve(root, f"/lib/modules/{facts.release}/{rel}")
        if host is None or not host.is_file():
            continue
        module = elf.read_module(host)
        # As Module.symvers names owners: the source path (modules.dep adds "kernel/").
        owner = rel.removeprefix("kernel/").rsplit(".ko", 1)[0]
        for export in module.exports:
            symbols.setdefault(export.name, Symbol(export.name, export.crc or 0, owner,
                                                   export.gpl_only, export.namespace))
    return replace(facts, symbols=symbols)


def image_modules(tree: Path, dir_name: str) -> ImageModules:
    base = f"{dir_name.rstrip('/')}/lib/modules"
    found = modules_from_root(tree, base)
    if not found:
        raise DtkError(f"the image has no kernel modules under {base}/<kernel>/: it is not "
                       "a driver image",
                       hint="KMM driver images keep modules in <dirName>/lib/modules/<kernel>/ "
                            "(dirName defaults to /opt)")
    return ImageModules(found, {k: depmod_index(tree, base, k) for k in found})


def _reason(prediction: chk.Prediction) -> str:
    refusals = prediction.refusals
    if refusals:
        return refusals[0].message
    taints = [f.message for f in prediction.findings if f.severity is chk.Severity.TAINT]
    return f"loads (taints: {taints[0]})" if taints else "loads"


def host_policy(host_root: Path) -> chk.Policy:
    """What the machine enforces whichever kernel it boots: lockdown (Debian turns it
    on under Secure Boot), module.sig_enforce=1 on the command line, or the kernel's
    own sig_enforce parameter (Y under Secure Boot)."""
    def read(inner: str) -> str:
        try:
            return (host_root / inner.lstrip("/")).read_text()
        except OSError:
            return ""

    lockdown = read("/sys/kernel/security/lockdown")
    return chk.Policy(secure_boot=bool(lockdown) and "[none]" not in lockdown,
                      sig_enforce="module.sig_enforce=1" in read("/proc/cmdline").split()
                      or read("/sys/module/module/parameters/sig_enforce").strip() == "Y")


def with_host_trust(loaded: Loaded, trusted: Sequence[x509.Certificate]) -> Loaded:
    """A module whose signer is one of the host's other trusted keys (an enrolled MOK,
    a db certificate, a declaration's --cert) verified against that key, as the
    kernel verifies it against its .machine or .platform keyring."""
    sig = loaded.module.signature
    if sig is None or loaded.digest is None or loaded.trust is not SignatureTrust.UNKNOWN:
        return loaded
    for cert in trusted:
        if sign.names_cert(sig.signer, cert):
            ok = sign.verify_digest(sig, loaded.digest, cert).ok
            return replace(loaded, trust=SignatureTrust.TRUSTED if ok
                           else SignatureTrust.REJECTED)
    return loaded


def _untrusted(loaded: Loaded) -> str:
    """The node's words for a module whose signer the host does not trust."""
    sig = loaded.module.signature
    assert sig is not None
    key = f" (key id {sig.signer.skid.hex()})" if sig.signer.skid else \
        f" (serial {sig.signer.serial:x})" if sig.signer.serial is not None else ""
    return (f"signed by '{sig.signer.issuer_cn}'{key}, a key this host does not trust (not "
            "built into the kernel, not an enrolled MOK, not in db): the kernel refuses it "
            "(Loading of module with unavailable key is rejected); enrol it with `dtk node "
            "enroll CERT`, then confirm in MokManager at the next boot")


def _dep_lines(tree: Path, base: str, kernel: str) -> dict[str, tuple[str, ...]]:
    """The image's modules.dep.bin for `kernel`: name → (its path, the paths it needs)."""
    rootfd = rootfs.open_root(tree)
    try:
        data = rootfs.read_at(rootfd, f"{base}/{kernel}/modules.dep.bin", rootfs.Mode.BENEATH)
    finally:
        os.close(rootfd)
    if data is None:
        return {}
    try:
        index = depindex.read_index(data)
    except depindex.DepIndexError:
        return {}  # check_depmod says so for each module
    out = {}
    for name, values in index.items():
        target, _, deps = values[0].partition(":")
        out[name] = (target.strip(), *deps.split())
    return out


def _where(tree: Path, base: str, kernel: str, host_root: Path, rel: str) -> str | None:
    """Why the path `rel` from the image's modules.dep.bin would not open for modprobe -d
    (None: it opens, and is a file of the image or of the host's kernel K)."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if rel.startswith("/") or ".." in parts or not parts:
        return f"its modules.dep.bin names {rel!r}, outside the image's modules"
    try:
        found = rootfs.resolve(tree, f"{base}/{kernel}/{rel}", rootfs.Mode.BENEATH)
    except rootfs.UnsafePathError:
        if parts[0] != "host":
            raise
        # Through KMM's `host` link, the one way out of a tree (oci.HostModules): into
        # the node's own /lib/modules/K.
        found = rootfs.resolve(host_root, f"/lib/modules/{kernel}/{'/'.join(parts[1:])}")
        return None if found is not None and found.is_file() else \
            f"it needs {'/'.join(parts[1:])}, which {kernel} as this host has it does not ship"
    return None if found is not None and found.is_file() else \
        f"its modules.dep.bin names {rel}, which is not in the image"


def dependencies(tree: Path, dir_name: str, kernel: str, host_root: Path,
                 targets: Iterable[str]) -> dict[str, list[str]]:
    """Per target, the modules `modprobe -d` loads with it (its modules.dep.bin closure,
    by name). Every path of the closure must open as modprobe opens it: inside the
    image, or behind the image's `host` link in this host's /lib/modules/K."""
    base = f"{dir_name.rstrip('/')}/lib/modules"
    lines = _dep_lines(tree, base, kernel)
    out: dict[str, list[str]] = {}
    for target in targets:
        line = lines.get(target)
        if line is None:
            continue  # not in the index: the target's own verdict says so
        for rel in line:
            problem = _where(tree, base, kernel, host_root, rel)
            if problem is not None:
                raise DtkError(f"{target}: {problem}: `modprobe -d` would fail",
                               hint="rebuild the image with depmod run last, its `host` "
                                    "link pointing at /host/lib/modules/K (or with K's "
                                    "modules copied in)")
        out[target] = [modfile.module_name(rel) for rel in line[1:]]
    return out


def verify(tree: Path, dir_name: str, kernel: str, host_root: Path,
           trusted: Sequence[bytes] = ()) -> list[ModuleVerdict]:
    """Every module the image has for `kernel`, checked against the host's `kernel`;
    `trusted`: the host's other trusted certificates (DER: MOKs, db, --cert)."""
    image = image_modules(tree, dir_name)
    if kernel not in image.modules:
        raise DtkError(f"the image has modules for {', '.join(sorted(image.modules))}, not for "
                       f"{kernel}: modprobe -d would not find them",
                       hint=f"point the kernelMapping for {kernel} at an image built for it")
    facts = installed.for_installed(host_root, kernel)
    needed = {d for loaded in image.modules[kernel] for d in loaded.module.depends}
    facts = with_in_tree_exports(facts, host_root, needed)
    certs = [x509.load_der_x509_certificate(d) for d in trusted]
    loaded = [with_host_trust(one, certs) for one in image.modules[kernel]]
    own = ImageModules({kernel: loaded}, {kernel: image.depmod[kernel]})
    policy = host_policy(host_root)
    verdicts = []
    for item, p in zip(loaded, check_target(own, facts, policy), strict=True):
        refused_key = not p.loads and p.refusals[0].code == "signature" \
            and item.trust_on(keyring.load(facts.builtin_certs)) is SignatureTrust.UNKNOWN \
            and item.module.signature is not None and item.module.signature_problem is None
        verdicts.append(ModuleVerdict(p.module, p.loads,
                                      _untrusted(item) if refused_key else _reason(p)))
    return verdicts
