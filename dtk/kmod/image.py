"""Modules inside driver-container images: read them, sign them into a new image.

Images are read through a buildah working container mounted on the host;
every path is resolved inside the image (see rootfs), so a hostile image
cannot make dtk read or write outside its root.
"""

from __future__ import annotations

import posixpath
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from dtk import kernel as kern
from dtk import rootfs
from dtk.engine import buildah
from dtk.errors import DtkError
from dtk.kernel import depindex, modfile
from dtk.kmod import elf, sign
from dtk.kmod.check import DepIndex, SignatureTrust

MODULES_DIR = "/opt/lib/modules"  # KMM's default dirName + lib/modules


@dataclass(frozen=True)
class Loaded:
    """A module as read from disk, with its signature checked against a certificate."""

    module: elf.KernelModule
    trust: SignatureTrust
    digest: bytes | None = None  # of the signed content, to verify against other keys later

    def trust_on(self, builtin: Sequence[x509.Certificate]) -> SignatureTrust:
        """Trust on a kernel with these built-in keys (the user's certificate first).

        Like pkcs7_validate_trust_one(): the key is looked up by the signer id; a key the
        kernel has that does not verify the signature is -EKEYREJECTED, not an unknown key.
        """
        sig = self.module.signature
        if sig is None or self.digest is None or \
                self.trust in (SignatureTrust.TRUSTED, SignatureTrust.REJECTED):
            return self.trust
        for cert in builtin:
            if sign.names_cert(sig.signer, cert):
                return SignatureTrust.BUILTIN if sign.verify_digest(sig, self.digest, cert).ok \
                    else SignatureTrust.REJECTED  # the kernel's own key, but the bytes changed
        return self.trust  # another key: an enrolled MOK, or none the kernel knows


def load(data: bytes, path: str, kind: str | None,
         cert: x509.Certificate | None) -> Loaded:
    module = elf.parse_module(data, path, kind)
    sig = module.signature
    if sig is None:
        return Loaded(module, SignatureTrust.UNSIGNED)
    digest = sign.content_digest(data[: sig.signed_length], sig)
    if cert is None or digest is None:
        return Loaded(module, SignatureTrust.UNKNOWN, digest)
    if not sign.names_cert(sig.signer, cert):
        return Loaded(module, SignatureTrust.UNTRUSTED, digest)
    ok = sign.verify_digest(sig, digest, cert).ok
    return Loaded(module, SignatureTrust.TRUSTED if ok else SignatureTrust.REJECTED, digest)


def load_file(path: Path, cert: x509.Certificate | None = None) -> Loaded:
    data, kind = modfile.read_bytes(path)
    return load(data, str(path), kind, cert)


def modules_from_root(root: Path, base: str = MODULES_DIR,
                      cert: x509.Certificate | None = None) -> dict[str, list[Loaded]]:
    """Modules per kernel directory under `base` (e.g. /opt/lib/modules/<K>/…)."""
    top = rootfs.resolve(root, base)
    if top is None or not top.is_dir():
        return {}
    found: dict[str, list[Loaded]] = {}
    for entry in sorted(p.name for p in top.iterdir()):
        for inner, host in rootfs.walk_files(root, f"{base}/{entry}"):
            if modfile.is_module(inner):
                data, kind = modfile.read_bytes(host)
                found.setdefault(entry, []).append(load(data, inner, kind, cert))
    return found


def depmod_index(root: Path, base: str, kernel_dir: str) -> DepIndex:
    """What `modprobe -d` can find: the modules modules.dep.bin lists.

    KMM's worker runs kmod's `modprobe -d /opt NAME`, which finds NAME and its
    dependencies only through the image's modules.dep.bin (libkmod never reads
    the text modules.dep); so the names come from the .bin, and a text-only
    image (busybox's depmod) resolves nothing.
    """
    top = f"{base}/{kernel_dir}"
    binary = rootfs.resolve(root, f"{top}/modules.dep.bin")
    if binary is None or not binary.is_file():
        text = rootfs.resolve(root, f"{top}/modules.dep")
        return DepIndex(frozenset(), text_only=text is not None and text.is_file())
    try:
        index = depindex.read_index(binary.read_bytes())
    except depindex.DepIndexError as exc:
        return DepIndex(frozenset(), corrupt=str(exc))
    names: set[str] = set(index)
    entries: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, values in index.items():
        target, _, deps = values[0].partition(":") if values else ("", "", "")
        entries[name] = (target, tuple(deps.split()))
        names.update(modfile.module_name(p) for p in deps.split())
    recorded = {p for path, deps in entries.values() for p in (path, *deps) if p}
    resolved = {rel: worker_path(root, top, rel, kernel_dir) for rel in sorted(recorded)}
    return DepIndex(frozenset(names), entries=entries, resolved=resolved)


# Where KMM's worker pod mounts the node's modules (KMM d8e8410): images link their
# kernel directory to either (upstream docs: /host/lib/modules/K; midstream: /lib/modules/K).
NODE_MODULES = ("/host/lib/modules/", "/lib/modules/")
_MAX_LINKS = 40  # the kernel's own limit on links followed in one path lookup


def worker_path(root: Path, kdir: str, rel: str, release: str) -> tuple[str, str]:
    """Where `rel` (a path modules.dep records, relative to the image's kernel directory
    `kdir`) opens in KMM's worker: the worker copies `kdir` as it is (`cp -R` keeps
    links) and mounts the node's /lib/modules at /lib/modules and /host/lib/modules. So
    a path resolves in the copied tree, or through an absolute link into the node's
    modules (("node", path under /lib/modules/K)); anything else is ("missing", why)."""
    top = rootfs.resolve(root, kdir)  # the copied directory itself, resolved in the image
    if top is None or not top.is_dir():
        return "missing", f"{kdir} is not a directory in the image"
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    current: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if not current:
                return "missing", f"{rel} climbs out of the kernel directory the worker copies"
            current.pop()
            continue
        inner = "/".join([kdir.rstrip("/"), *current, name])
        host = top.joinpath(*current, name)  # every component before it: a real directory
        try:
            info = host.lstat()
        except OSError:
            return "missing", f"{inner} does not exist in the image"
        if not stat.S_ISLNK(info.st_mode):
            current.append(name)
            continue
        hops += 1
        if hops > _MAX_LINKS:
            return "missing", f"too many links resolving {rel}"
        target = str(host.readlink())
        if target.startswith("/"):
            return _node_path(inner, target, parts, release)
        parts = [p for p in target.split("/") if p not in ("", ".")] + parts
    info = top.joinpath(*current).lstat()
    return ("image", "") if stat.S_ISREG(info.st_mode) else \
        ("missing", f"{rel} is not a regular file in the image")


def _node_path(link: str, target: str, rest: list[str], release: str) -> tuple[str, str]:
    clean = posixpath.normpath("/".join([target.rstrip("/"), *rest]))
    for prefix in NODE_MODULES:
        if clean.startswith(prefix + release + "/"):
            return "node", clean.removeprefix(prefix + release + "/")
    return "missing", (f"{link} links to {target}, outside the copied tree and the node's "
                       f"modules the worker mounts ({NODE_MODULES[0]}{release}, "
                       f"{NODE_MODULES[1]}{release})")


@dataclass(frozen=True)
class ImageModules:
    modules: dict[str, list[Loaded]]  # per kernel directory
    depmod: dict[str, DepIndex]  # per kernel directory: what modules.dep.bin lists


def read_image_index(image: str, base: str = MODULES_DIR,
                     cert: x509.Certificate | None = None) -> ImageModules:
    buildah.inspect(image)  # a clear error when it does not exist
    with buildah.working_container(image) as ctr, ctr.mounted() as root:
        found = modules_from_root(root, base, cert)
        depmod = {k: depmod_index(root, base, k) for k in found}
    if not found:
        raise DtkError(f"{image} has no kernel modules under {base}/<kernel>/",
                       hint="KMM images keep modules in /opt/lib/modules/<kernel>/")
    return ImageModules(found, depmod)


def read_modules(image: str, base: str = MODULES_DIR,
               cert: x509.Certificate | None = None) -> dict[str, list[Loaded]]:
    return read_image_index(image, base, cert).modules


def sign_patterns(patterns: list[str], release: str) -> list[list[str]]:
    """Each filesToSign entry with KMM's variables substituted, in every spelling.

    KMM substitutes the *normalized* kernel (`…+rt` → `…_rt`, `6.12.117+deb12` →
    `6.12.117_deb12`), but images lay modules out under the raw `uname -r`.
    Trying both is what keeps RT and Debian 6.12 modules from silently staying
    unsigned.
    """
    normalized = kern.kmm_variables(release)
    raw = {**normalized, "KERNEL_FULL_VERSION": release, "KERNEL_VERSION": release}
    out = []
    for pattern in patterns:
        spellings = [kern.substitute(pattern, normalized), kern.substitute(pattern, raw)]
        out.append(list(dict.fromkeys(spellings)))
    return out


def match_files(root: Path, patterns: list[str], release: str) -> list[tuple[str, Path]]:
    """Every file to sign; a pattern that matches nothing is an error, before any write."""
    chosen: dict[str, Path] = {}
    for spellings in sign_patterns(patterns, release):
        hits = [hit for spelling in spellings for hit in rootfs.glob(root, spelling)]
        if not hits:
            raise DtkError(f"filesToSign entry {' / '.join(spellings)} matches no file",
                           hint="a module that is not signed is refused under Secure Boot; "
                                "fix the path (ls the image's /opt/lib/modules)")
        for inner, host in hits:
            if not modfile.is_module(inner):
                raise DtkError(f"{inner} matched a filesToSign entry but is not a .ko file")
            chosen[inner] = host
    return sorted(chosen.items())


@dataclass(frozen=True)
class SignedImage:
    name: str
    image_id: str
    files: tuple[str, ...]


def sign_image(unsigned: str, output: str, patterns: list[str], release: str, *,
               signer: sign.Signer, on_file: Callable[[str], None] | None = None,
               labels: dict[str, str] | None = None) -> SignedImage:
    """KMM's sign step: a new image whose matching modules carry a signature.

    Signing happens on the host in this process, on the container's mounted
    layer; the key never enters the container or the image.
    """
    if not patterns:
        raise DtkError("no files to sign", hint="pass --files-to-sign GLOB (repeatable)")
    buildah.inspect(unsigned)
    with buildah.working_container(unsigned) as ctr:
        with ctr.mounted() as root:
            files = match_files(root, patterns, release)
            for inner, host in files:
                sign.sign_file(host, signer)
                if on_file:
                    on_file(inner)
        for key, value in (labels or {}).items():
            ctr.config("--label", f"{key}={value}")
        image_id = ctr.commit(output)
    return SignedImage(output, image_id, tuple(inner for inner, _ in files))
