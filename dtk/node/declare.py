"""What a host declares: one KMM Module file per module under /etc/dtk/modules.

Both forms of `dtk node add` end as the same thing, a Module document that
`dtk module` reads too, so one reader (dtk.kmmapi.load, strict, naming field
paths) and one resolver (dtk.kmmapi.plan: kernelMappings, KMM's variables,
registryTLS, inTreeModulesToRemove) serve the host as they serve a cluster.

What is stored is what the host needs and nothing more: the Module without
its build and sign specs (a node never builds or signs, so the signing key's
Secret never lands on it) and the imageRepoSecret it pulls with. Files are
0600 (they may hold registry credentials) and written atomically, after every
declaration in the input has been read, validated and resolved for the
kernel: a bad input leaves nothing behind.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dtk.engine import registry
from dtk.errors import DtkError, ProblemsError
from dtk.files import write_atomic
from dtk.kmmapi import model as m
from dtk.kmmapi import plan as planner
from dtk.kmmapi import validate
from dtk.kmmapi.load import load_documents
from dtk.node import hostkeys
from dtk.node.layout import Layout, check_name

# The declaration's own settings, kept in the Module file as annotations (which KMM
# ignores), so that the file stays one `dtk module` and kubectl read.
REQUIRE_SIGNATURE = "dtk/require-signature"
CERTIFICATES = "dtk/trusted-certificates"  # PEM: keys the kernel trusts (add --cert)


@dataclass(frozen=True)
class Settings:
    """What `dtk node add` records beside the Module: only signed images
    (--require-signature), certificates this host's kernel trusts for modules where its
    firmware's cannot be read (--cert, DER)."""

    require_signature: bool = False
    certificates: tuple[bytes, ...] = ()

    def annotations(self) -> dict[str, str]:
        out = {REQUIRE_SIGNATURE: "true"} if self.require_signature else {}
        if self.certificates:
            out[CERTIFICATES] = "".join(
                x509.load_der_x509_certificate(d).public_bytes(Encoding.PEM).decode()
                for d in self.certificates)
        return out


@dataclass(frozen=True)
class Declaration:
    name: str
    path: Path
    bundle: m.Bundle
    digest: str  # of the file's bytes: outcomes prepared for another form are not used

    @property
    def module(self) -> m.Module:
        return self.bundle.modules[0]

    @property
    def modprobe(self) -> m.Modprobe:
        assert self.module.module_loader is not None  # checked when read
        return self.module.module_loader.container.modprobe

    @property
    def module_name(self) -> str:
        probe = self.modprobe
        return probe.module_name or (probe.modules_loading_order or ("",))[0]

    def resolve(self, kernel: str) -> planner.KernelPlan:
        """The image (and its settings) for `kernel`; an error when no mapping matches."""
        result = planner.plan(self.module, [kernel], self.bundle)
        if not result.kernels:
            patterns = [km.literal or km.regexp for km in
                        (self.module.module_loader.container.kernel_mappings or ())
                        ] if self.module.module_loader else []
            raise DtkError(f"no kernelMapping of {self.name} matches kernel {kernel} "
                           f"(patterns: {', '.join(patterns) or 'none'})",
                           hint="add a kernelMappings entry (literal or regexp) for this kernel")
        return result.kernels[0]

    @property
    def require_signature(self) -> bool:
        """Whether the owner asked for signed images only (`add --require-signature`)."""
        meta = self.module.raw.get("metadata") or {}
        return str((meta.get("annotations") or {}).get(REQUIRE_SIGNATURE)) == "true"

    @property
    def certificates(self) -> tuple[bytes, ...]:
        """The certificates (DER) `add --cert` named for this declaration."""
        meta = self.module.raw.get("metadata") or {}
        text = str((meta.get("annotations") or {}).get(CERTIFICATES) or "")
        marker = "-----BEGIN CERTIFICATE-----"
        try:  # one PEM block at a time: Debian 12's cryptography (38) reads one per call
            return tuple(x509.load_pem_x509_certificate((marker + block).encode())
                         .public_bytes(Encoding.DER) for block in text.split(marker)[1:])
        except ValueError:
            return ()  # edited by hand into something else

    def secret(self) -> m.Secret | None:
        mod = self.module
        return self.bundle.secret(mod.namespace, mod.image_repo_secret) \
            if mod.image_repo_secret else None


# What a host can fetch from; container storage and daemons are a build machine's.
_LOCAL = ("oci-archive:", "oci:")
_NOT_ON_A_HOST = ("containers-storage:", "docker-daemon:", "docker-archive:", "dir:", "sif:",
                  "ostree:")
_SAVE = ("save it as an archive (skopeo copy containers-storage:IMAGE "
         "oci-archive:/var/lib/drivers/x.tar) and declare oci-archive:/var/lib/drivers/x.tar, "
         "or push it to a registry (dtk build … --push)")


def image_source(image: str, *, machine: bool = True) -> str:
    """IMAGE as `dtk node add` stores it: an archive path made absolute (the hook and the
    boot unit run from /; under --root, `machine` false, it must be given absolute, as
    the node sees it); a transport a host cannot read, or a name only this machine's
    container storage knows, refused with the way to hand it over."""
    for transport in _NOT_ON_A_HOST:
        if image.startswith(transport):
            raise DtkError(f"{image}: a host without a container engine cannot read "
                           f"{transport.rstrip(':')} images", hint=_SAVE)
    for transport in _LOCAL:
        if image.startswith(transport):
            path, sep, ref = image[len(transport):].partition(":")
            if not path:
                raise DtkError(f"{image} names no path", hint=f"{transport}/path/to/image")
            if not machine and not path.startswith("/"):
                raise DtkError(f"{image}: under --root, name the archive by its absolute "
                               "path as the node sees it", hint=f"{transport}/var/lib/…")
            return f"{transport}{Path(path).absolute()}{sep}{ref}"
    name = image.removeprefix("docker://")
    if name.split("/", 1)[0] == "localhost":
        raise DtkError(f"{name} names no registry: localhost/… is how dtk build and buildah "
                       "name an image in this machine's container storage, which a host "
                       "does not read", hint=_SAVE)
    return image


def image_module(image: str, module: str, params: Sequence[str], name: str, *,
                 insecure: bool = False, secret: str | None = None,
                 machine: bool = True) -> dict[str, Any]:
    """`dtk node add IMAGE --module NAME`: the Module KMM would need for the same thing."""
    check_name(name)  # said in the user's words, before a generated document is read
    for param in params:
        if "=" not in param:
            raise DtkError(f"--param {param!r} is not key=value")
    container: dict[str, Any] = {
        "modprobe": {"moduleName": module, **({"parameters": list(params)} if params else {})},
        "kernelMappings": [{"regexp": "^.+$",
                            "containerImage": image_source(image, machine=machine)}]}
    if insecure:
        container["registryTLS"] = {"insecureSkipTLSVerify": True}
    spec: dict[str, Any] = {"selector": {}, "moduleLoader": {"container": container}}
    if secret:
        spec["imageRepoSecret"] = {"name": secret}
    return {"apiVersion": m.API_VERSION, "kind": "Module",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def pull_secret(name: str, image: str, authfile: Path) -> dict[str, Any]:
    """`--authfile FILE`: the Secret a Module would name, holding only FILE's entry for
    the image's registry (the rest of FILE stays off the host's declarations)."""
    try:
        data = json.loads(authfile.read_text())
        auths = data["auths"]
        assert isinstance(auths, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise DtkError(f"{authfile} is not a registry credentials file (no 'auths' object)",
                       hint="the file skopeo login or podman login writes "
                            "(containers-auth.json)") from None
    host = registry.parse(image.removeprefix("docker://")).registry or "docker.io"
    mine = {k: v for k, v in auths.items()
            if k.split("://", 1)[-1].split("/", 1)[0] in (host, f"index.{host}")}
    if not mine:
        raise DtkError(f"{authfile} has no credentials for {host}",
                       hint=f"skopeo login --authfile {authfile} {host}")
    payload = json.dumps({"auths": mine}).encode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": name, "namespace": "default"},
            "data": {".dockerconfigjson": base64.b64encode(payload).decode()}}


def check_local_image(layout: Layout, image: str, kernel: str) -> None:
    """A local archive or layout must be named by an absolute path, and be there: on the
    machine, when declared; under --root it may arrive later (a disk the node mounts),
    so its absence there is only said."""
    for transport in _LOCAL:
        if image.startswith(transport):
            path = Path(image[len(transport):].partition(":")[0])
            if not path.is_absolute():
                raise DtkError(f"{image} (for {kernel}) is not an absolute path",
                               hint="the kernel hook and the boot unit run from /: name "
                                    "the archive by its absolute path")
            if layout.host(str(path)).exists():
                return
            if layout.is_machine:
                raise DtkError(f"{image} (for {kernel}) does not exist",
                               hint="make it first: skopeo copy containers-storage:IMAGE "
                                    f"{transport}{path}")
            print(f"dtk node: note: {path} is not under {layout.root} yet: it must be there "
                  "when the node prepares", file=sys.stderr)


def _strip(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The Module without build and sign: nothing a node runs, and they name secrets
    (the signing key) that must not be copied to a host. Malformed parts are left for
    the reader to report."""
    doc = copy.deepcopy(dict(raw))
    doc.pop("status", None)
    spec = doc.get("spec")
    loader = spec.get("moduleLoader") if isinstance(spec, dict) else None
    container = loader.get("container") if isinstance(loader, dict) else None
    if not isinstance(container, dict):
        return doc
    mappings = container.get("kernelMappings")
    for part in (container, *(mappings if isinstance(mappings, list) else [])):
        if isinstance(part, dict):
            part.pop("build", None)
            part.pop("sign", None)
    return doc


def _secret_doc(secret: m.Secret) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": secret.type,
            "metadata": {"name": secret.name, "namespace": secret.namespace},
            "data": {k: base64.b64encode(v).decode() for k, v in secret.data.items()}}


def _read_text(text: str, label: str, shown: str | None = None) -> m.Bundle:
    """Documents from text, read strictly; messages name `shown` (the user's file)."""
    with tempfile.TemporaryDirectory(prefix="dtk-node-") as tmp:
        path = Path(tmp) / label
        path.write_text(text)
        try:
            bundle = load_documents([path])
            validate.check(bundle)
        except ProblemsError as exc:  # the temporary file is dtk's, not the user's: named
            raise ProblemsError(exc.message.replace(str(path), shown or label),
                                [{k: (shown or label) if v == str(path) else v
                                  for k, v in p.items()} for p in exc.problems],
                                hint=exc.hint) from None
        except DtkError as exc:
            raise DtkError(exc.message.replace(str(path), shown or label),
                           hint=exc.hint) from None
    return bundle


def _documents(bundle: m.Bundle, settings: Settings) -> list[tuple[str, str]]:
    """(name, stored text) for each Module of the bundle, checked."""
    out = []
    seen: dict[str, str] = {}
    for mod in bundle.modules:
        if mod.name in seen:
            raise DtkError(f"two Modules are named {mod.name} (in namespaces {seen[mod.name]} "
                           f"and {mod.namespace}): a host declares each module by its name",
                           hint="rename one of them (metadata.name), or declare them apart")
        seen[mod.name] = mod.namespace
        if mod.module_loader is None:
            raise DtkError(f"Module {mod.name} has no spec.moduleLoader",
                           hint="a device-plugin-only Module loads nothing on a host")
        docs = [_strip(mod.raw)]
        if settings.annotations():
            meta = docs[0].setdefault("metadata", {})
            meta["annotations"] = {**(meta.get("annotations") or {}), **settings.annotations()}
        if mod.image_repo_secret:
            secret = bundle.secret(mod.namespace, mod.image_repo_secret)
            assert secret is not None  # load_documents checked the reference
            docs.append(_secret_doc(secret))
        out.append((check_name(mod.name), yaml.safe_dump_all(docs, sort_keys=False)))
    if not out:
        raise DtkError("no Module among the documents given",
                       hint="dtk node add -f takes KMM Module files (kind: Module)")
    return out


def add(layout: Layout, bundle: m.Bundle, kernels: Sequence[str], *,
        replace: bool = False, settings: Settings = Settings()) -> list[Declaration]:
    """Store each Module of `bundle` once it is known to resolve for every kernel in
    `kernels` (the running one, normally); nothing is written when one fails. A name
    already declared is an error unless `replace`: the owner would lose a declaration
    without being told."""
    ready = []
    for name, text in _documents(bundle, settings):
        if not replace and layout.declaration(name).exists():
            raise DtkError(f"{name} is already declared ({layout.declaration(name)})",
                           hint="add --replace to replace it, or dtk node remove "
                                f"{name} first")
        decl = Declaration(name, layout.declaration(name), _read_text(text, f"{name}.yaml"),
                           text_digest(text.encode()))
        for kernel in kernels:
            check_local_image(layout, decl.resolve(kernel).image, kernel)
        ready.append((decl, text))
    for decl, text in ready:
        write_atomic(decl.path, text.encode(), mode=0o600)
    return [decl for decl, _ in ready]


def read_file_bundle(paths: Sequence[Path]) -> m.Bundle:
    """Module files as `dtk module` reads them, less build and sign (and so without
    the ConfigMaps and signing Secrets those name); errors name the user's files."""
    docs: list[Any] = []
    for path in paths:
        if not path.is_file():
            raise DtkError(f"{path} is not a file", hint="-f takes a KMM Module file")
        try:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise DtkError(f"{path} is not valid YAML{where}") from None
    kept = [_strip(d) if isinstance(d, dict) and d.get("kind") == "Module" else d
            for d in docs
            if not (isinstance(d, dict) and d.get("kind") == "ConfigMap")]
    return _read_text(yaml.safe_dump_all(kept, sort_keys=False), "modules.yaml",
                      ", ".join(str(p) for p in paths))


def image_bundle(*docs: dict[str, Any]) -> m.Bundle:
    return _read_text(yaml.safe_dump_all(docs, sort_keys=False), "image.yaml", "IMAGE")


def names(layout: Layout) -> list[str]:
    if not layout.config.is_dir():
        return []
    return sorted(p.stem for p in layout.config.glob("*.yaml"))


def declarations(layout: Layout) -> list[Declaration]:
    return [find(layout, name) for name in names(layout)]


def find(layout: Layout, name: str) -> Declaration:
    path = layout.declaration(name)
    if not path.is_file():
        known = ", ".join(names(layout)) or "none"
        raise DtkError(f"no declaration named {name!r} (declared: {known})",
                       hint="dtk node list shows what is declared")
    return Declaration(name, path, load_documents([path]), text_digest(path.read_bytes()))


def text_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def to_json(decl: Declaration) -> dict[str, Any]:
    loader = decl.module.module_loader
    assert loader is not None
    return {"name": decl.name, "file": str(decl.path), "moduleName": decl.module_name,
            "kernelMappings": [{"pattern": km.literal or km.regexp,
                                "containerImage": km.container_image
                                or loader.container.container_image}
                               for km in loader.container.kernel_mappings or ()],
            "parameters": list(decl.modprobe.parameters),
            "imageRepoSecret": decl.module.image_repo_secret,
            "requireSignature": decl.require_signature,
            "certificates": [hostkeys.describe(d) for d in decl.certificates]}
