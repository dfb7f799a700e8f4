"""KMM's admission rules: the Module webhook (`internal/webhook/module.go`) and
the CRD schema's own constraints (MinItems, required fields, CEL rules).

The aim is "a Module KMM admits, dtk admits": where KMM is lenient (an image
only needs a ':' or '@' somewhere, so 'host:5000/img' passes) dtk is too.
Every rule yields a `Violation` with the field path; all are reported at once.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dtk.errors import DtkError, ProblemsError
from dtk.k8snames import dns1123_subdomain_problems
from dtk.kmmapi import model as m
from dtk.kmmapi.goregexp import RegexpError, compile_regexp

# KMM's maxCombinedLength: checked for every Module (webhook validateModule), although
# its message says "when version is set" (pod names embed both).
MAX_NAME_NAMESPACE = 41
# allowedHostPathPrefixes (KMM 29c905a; /run since dfccbc7), for devicePlugin and dra.
DRA_HOST_PATHS = ("/dev", "/sys", "/var", "/opt", "/run")
# constants.MinKubeMajorForDRA/MinorForDRA (KMM 36567c5): the webhook refuses spec.dra
# on an older cluster; without a version (KMM's hub webhook) the gate is skipped.
DRA_MIN_KUBE = (1, 34)
DRA_MAX_ITEMS = 32  # deviceClasses[].selectors and .config (CRD MaxItems)
_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_CONTAINER = "spec.moduleLoader.container"


@dataclass(frozen=True)
class Violation:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


KubeVersion = tuple[int, int]


def parse_kube_version(text: str) -> KubeVersion:
    """'1.34', 'v1.34.2' → (1, 34), as KMM's version.KubeVersion keeps major and minor."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?", text.strip())
    if match is None:
        raise DtkError(f"--kube-version {text!r} is not a Kubernetes version",
                       hint="give MAJOR.MINOR, as `kubectl version` prints it: 1.34")
    return int(match.group(1)), int(match.group(2))


def violations(mod: m.Module, kube: KubeVersion | None = None) -> list[Violation]:
    """Every rule KMM's webhook and the CRD apply to `mod`; `kube`: the cluster's version
    (None skips the DRA gate, as KMM's hub webhook does)."""
    found: list[Violation] = []
    for rule in (_names, _selector, _exclusive, _tolerations, _dra, _loader):
        for v in rule(mod):
            if v not in found:  # merged sign specs repeat the container's problems
                found.append(v)
    found += [v for v in _dra_gate(mod, kube) if v not in found]
    return found


def update_violations(old: m.Module, new: m.Module) -> list[Violation]:
    """KMM's ValidateUpdate: a Module's version cannot change to or from empty (its
    ordered upgrade needs one all along)."""
    if old.module_loader is None or new.module_loader is None:
        return []
    before, after = old.module_loader.container.version, new.module_loader.container.version
    if bool(before) == bool(after):
        return []
    return [Violation(f"{_CONTAINER}.version", f"cannot update to or from an empty version "
                      f"({before or 'empty'} → {after or 'empty'}); delete the Module and "
                      "create it again")]


def check(bundle: m.Bundle, kube: KubeVersion | None = None,
          previous: m.Bundle | None = None) -> None:
    """Raise one DtkError listing every violation of every Module in the bundle."""
    found = [(f"Module {mod.namespace}/{mod.name}", mod.source, v)
             for mod in bundle.modules for v in violations(mod, kube)]
    old = {(x.namespace, x.name): x for x in (previous.modules if previous else ())}
    found += [(f"Module {mod.namespace}/{mod.name}", mod.source, v) for mod in bundle.modules
              if (mod.namespace, mod.name) in old
              for v in update_violations(old[mod.namespace, mod.name], mod)]
    found += [(f"ConfigMap {c.namespace}/{c.name}", c.source, v)
              for c in bundle.configmaps.values() for v in _configmap_rules(c)]
    found += [(f"Secret {s.namespace}/{s.name}", s.source, v)
              for s in bundle.secrets.values() for v in _secret_rules(s)]
    lines = [f"{what} ({source}): {v}" for what, source, v in found]
    # Whose rule: KMM's (webhook, CRD) for Modules, the API server's for the others.
    problems = [{"file": source.file, "document": source.index + 1, "item": source.item,
                 "path": v.path, "message": v.message,
                 "rule": "webhook" if what.startswith("Module ") else "schema"}
                for what, source, v in found]
    if lines:
        modules = any(x.startswith("Module ") for x in lines)
        others = any(not x.startswith("Module ") for x in lines)
        who = "the cluster" if modules and others else "KMM" if modules else "the API server"
        raise ProblemsError(f"{who} would reject {len(lines)} field(s):\n  " + "\n  ".join(lines),
                            problems,
                            hint=_check_hint(lines))


def _check_hint(lines: list[str]) -> str:
    kinds = [kind for kind in ("ConfigMap", "Secret") if any(x.startswith(kind + " ")
                                                             for x in lines)]
    parts = (["KMM's admission webhook and its CRD schema refuse the Module fields"]
             if any(x.startswith("Module ") for x in lines) else [])
    if kinds:
        parts.append("the API server refuses the " + " and ".join(f"{k}s" for k in kinds))
    return " and ".join(parts) + "; fix the fields named above"


# The API server's ValidateSecret for the two registry-credential types: the key is
# required and must unmarshal into a Go map[string]interface{} (a JSON object, or null).
_DOCKER_KEYS = {m.DOCKERCONFIGJSON: ".dockerconfigjson", "kubernetes.io/dockercfg": ".dockercfg"}
MAX_OBJECT_BYTES = 1 << 20  # core.MaxSecretSize, which the API server applies to ConfigMaps too


def _json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")  # Python takes NaN and Infinity; Go does not


def _configmap_rules(cm: m.ConfigMap) -> Iterator[Violation]:
    """ValidateConfigMap's size rule: the values of `data` (bytes, as Go's len counts a
    string) and of `binaryData` (decoded) together; key names do not count."""
    size = sum(len(v.encode()) for v in cm.data.values()) + \
        sum(len(v) for v in cm.binary_data.values())
    if size > MAX_OBJECT_BYTES:
        yield Violation("data", f"must have at most {MAX_OBJECT_BYTES} bytes (data and "
                        f"binaryData), has {size}")


def _secret_rules(secret: m.Secret) -> Iterator[Violation]:
    """ValidateSecret: the values' size (not the keys'), and for the registry-credential
    types the key and its JSON. The content is never quoted: it holds credentials."""
    size = sum(len(v) for v in secret.data.values())
    if size > MAX_OBJECT_BYTES:
        yield Violation("data", f"must have at most {MAX_OBJECT_BYTES} bytes, has {size}")
    key = _DOCKER_KEYS.get(secret.type)
    if key is None:
        return
    path = f"data[{key}]"
    raw = secret.data.get(key)
    if raw is None:
        yield Violation(path, f"required for type {secret.type}")
        return
    doc = _registry_json(raw)
    if isinstance(doc, str):
        yield Violation(path, f"{doc}; content not shown")


def _registry_json(raw: bytes) -> Any:
    """The decoded document, or a string saying why the API server refuses it."""
    try:
        doc = json.loads(raw, parse_constant=_json_constant)
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" \
            if isinstance(exc, json.JSONDecodeError) else ""
        return f"is not valid JSON{where}"
    if doc is not None and not isinstance(doc, dict):
        return f"must be a JSON object, not a JSON {type(doc).__name__}"
    return doc if doc is not None else {}


PULL_POLICIES = ("Always", "IfNotPresent", "Never")


def pull_pod_problem(policy: str, path: str = "spec.imagePullPolicy") -> str | None:
    """Why the API server refuses the pods KMM makes with this pull policy: the Module's
    and ModuleImagesConfig's CRDs admit any string (no enum, no webhook rule), a Pod only
    the three policies ("" is defaulted)."""
    if not policy or policy in PULL_POLICIES:
        return None
    return (f"{path} {policy!r}: the API server admits it, but refuses the pods KMM makes "
            f"from it ({', '.join(PULL_POLICIES[:-1])} or {PULL_POLICIES[-1]})")


def warnings(bundle: m.Bundle) -> list[str]:
    """What the API server admits but nothing can use: a registry Secret with no
    credentials in it (a legitimate placeholder, so never refused), a pull policy no
    Pod takes."""
    out = []
    for mod in bundle.modules:
        problem = pull_pod_problem(mod.module_loader.container.image_pull_policy,
                                   f"{_CONTAINER}.imagePullPolicy") \
            if mod.module_loader else None
        if problem:
            out.append(f"Module {mod.namespace}/{mod.name} ({mod.source}): {problem}")
    for cfg in bundle.images_configs:
        problem = pull_pod_problem(cfg.image_pull_policy)
        if problem:
            out.append(f"{cfg.kind} {cfg.namespace}/{cfg.name} ({cfg.source}): {problem}")
    for secret in bundle.secrets.values():
        key = _DOCKER_KEYS.get(secret.type)
        raw = secret.data.get(key) if key else None
        doc = _registry_json(raw) if raw is not None else None
        creds = doc.get("auths") if secret.type == m.DOCKERCONFIGJSON and \
            isinstance(doc, dict) else doc
        if isinstance(doc, dict) and not (isinstance(creds, dict) and creds):
            what = "no 'auths' object with a registry in it" \
                if secret.type == m.DOCKERCONFIGJSON else "no registry in it"
            out.append(f"Secret {secret.namespace}/{secret.name} ({secret.source}): "
                       f"data[{key}] has {what}: the API server admits it, but pulls and "
                       "pushes that use it go without credentials")
    return out


def _names(mod: m.Module) -> Iterator[Violation]:
    total = len(mod.name) + len(mod.namespace)
    if total > MAX_NAME_NAMESPACE:
        yield Violation("metadata.name", f"name and namespace are {total} characters together; "
                        f"at most {MAX_NAME_NAMESPACE}")


def _selector(mod: m.Module) -> Iterator[Violation]:
    if mod.selector is None:
        yield Violation("spec.selector", "required (use {} to select every node)")


def _exclusive(mod: m.Module) -> Iterator[Violation]:
    if mod.device_plugin is not None and mod.dra is not None:
        yield Violation("spec", "devicePlugin and dra are mutually exclusive")


def _tolerations(mod: m.Module) -> Iterator[Violation]:
    for n, t in enumerate(mod.tolerations):
        path = f"spec.tolerations[{n}]"
        if t.key and not _qualified_name(t.key):
            yield Violation(f"{path}.key", f"{t.key!r} is not a qualified name "
                            "([prefix/]name, name at most 63 alphanumerics, '-', '_', '.')")
        if not t.key and t.operator != "Exists":
            yield Violation(f"{path}.operator", "must be 'Exists' when key is empty")
        if t.toleration_seconds is not None and t.effect != "NoExecute":
            yield Violation(f"{path}.effect", "must be 'NoExecute' when tolerationSeconds is set")
        if t.operator in ("Equal", ""):
            if len(t.value) > 63 or not _NAME.match(t.value):
                yield Violation(f"{path}.value", f"{t.value!r} is not a valid label value")
        elif t.operator == "Exists":
            if t.value:
                yield Violation(f"{path}.value", "must be empty when operator is 'Exists'")
        else:
            yield Violation(f"{path}.operator", f"{t.operator!r}: must be 'Equal' or 'Exists'")
        if t.effect and t.effect not in _EFFECTS:
            yield Violation(f"{path}.effect", f"{t.effect!r}: must be one of {', '.join(_EFFECTS)}")


def _qualified_name(key: str) -> bool:
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or dns1123_subdomain_problems(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_NAME.match(name))


def _dra(mod: m.Module) -> Iterator[Violation]:
    if mod.device_plugin is not None:
        yield from _host_paths(mod.device_plugin, "spec.devicePlugin")
    if mod.dra is None:
        return
    driver = mod.dra.get("driverName")
    if not isinstance(driver, str) or not driver:
        yield Violation("spec.dra.driverName", "required")
    elif dns1123_subdomain_problems(driver):
        yield Violation("spec.dra.driverName", f"{driver!r} is not a DNS subdomain")
    classes = mod.dra.get("deviceClasses")
    seen: set[str] = set()
    for n, dc in enumerate(classes if isinstance(classes, list) else []):
        name = dc.get("name") if isinstance(dc, dict) else None
        path = f"spec.dra.deviceClasses[{n}].name"
        if not isinstance(name, str) or not name:
            yield Violation(path, "required")
        elif dns1123_subdomain_problems(name):
            yield Violation(path, f"{name!r} is not a DNS subdomain")
        elif name in seen:
            yield Violation(path, f"{name!r} is a duplicate")
        else:
            seen.add(name)
        for key in ("selectors", "config"):
            items = dc.get(key) if isinstance(dc, dict) else None
            if isinstance(items, list) and len(items) > DRA_MAX_ITEMS:
                yield Violation(f"spec.dra.deviceClasses[{n}].{key}",
                                f"must have at most {DRA_MAX_ITEMS} items, has {len(items)}")
    yield from _host_paths(mod.dra, "spec.dra")


def _dra_gate(mod: m.Module, kube: KubeVersion | None) -> Iterator[Violation]:
    if mod.dra is not None and kube is not None and kube < DRA_MIN_KUBE:
        need = ".".join(map(str, DRA_MIN_KUBE))
        yield Violation("spec.dra", f"requires Kubernetes {need} or later; the cluster is "
                        f"{kube[0]}.{kube[1]} (--kube-version)")


def _host_paths(body: Any, where: str) -> Iterator[Violation]:
    volumes = body.get("volumes") or []
    for n, volume in enumerate(volumes if isinstance(volumes, list) else []):
        host = volume.get("hostPath") if isinstance(volume, dict) else None
        path = host.get("path") if isinstance(host, dict) else None
        if isinstance(path, str) and not _under_any(path, DRA_HOST_PATHS):
            shown = f" (it resolves to {go_clean(path)!r})" if go_clean(path) != path else ""
            yield Violation(f"{where}.volumes[{n}].hostPath.path",
                            f"{path!r}{shown} is not under {', '.join(DRA_HOST_PATHS)}")


def go_clean(path: str) -> str:
    """Go's filepath.Clean on a Unix path: '..' and '.' resolved lexically, slashes
    collapsed; '//x' is '/x' (POSIX normpath would keep the two slashes), '' is '.'."""
    clean = posixpath.normpath(path) if path else "."
    return "/" + clean.lstrip("/") if clean.startswith("//") else clean


def _under_any(path: str, roots: tuple[str, ...]) -> bool:
    """KMM's isAllowedHostPath: the cleaned path is a root or below one (so
    '/dev/../etc/shadow' is /etc/shadow, and '/devious' is not under /dev)."""
    clean = go_clean(path)
    return any(clean == root or clean.startswith(root + "/") for root in roots)


def _image(image: str, path: str) -> Iterator[Violation]:
    # KMM's own test: any ':' or '@'. A registry port alone passes, as in KMM.
    if image and ":" not in image and "@" not in image:
        yield Violation(path, f"image {image!r} must set a tag or a digest")


def _loader(mod: m.Module) -> Iterator[Violation]:
    if mod.module_loader is None:
        return
    cont = mod.module_loader.container
    yield from _in_tree(cont.in_tree_module_to_remove, cont.in_tree_modules_to_remove, _CONTAINER)
    yield from _image(cont.container_image, f"{_CONTAINER}.containerImage")
    yield from _modprobe(cont.modprobe)
    yield from _sign_section(cont, cont.sign, f"{_CONTAINER}.sign")
    if not cont.kernel_mappings:
        yield Violation(f"{_CONTAINER}.kernelMappings", "at least one mapping is required")
    for n, km in enumerate(cont.kernel_mappings or ()):
        yield from _mapping(cont, km, f"{_CONTAINER}.kernelMappings[{n}]")


def _in_tree(single: str, many: tuple[str, ...] | None, path: str) -> Iterator[Violation]:
    if single and many is not None:
        yield Violation(f"{path}.inTreeModuleToRemove",
                        "cannot be set together with inTreeModulesToRemove (use the list)")


def _mapping(cont: m.Container, km: m.KernelMapping, path: str) -> Iterator[Violation]:
    if km.literal and km.regexp:
        yield Violation(path, "literal and regexp are mutually exclusive")
    elif not km.literal and not km.regexp:
        yield Violation(path, "one of literal or regexp is required")
    if km.regexp:
        try:
            compile_regexp(km.regexp)
        except RegexpError as exc:
            yield Violation(f"{path}.regexp", f"{km.regexp!r} is not a valid Go (RE2) regexp: "
                            f"{exc}")
    if not km.container_image and not cont.container_image:
        yield Violation(f"{path}.containerImage",
                        f"required unless {_CONTAINER}.containerImage is set")
    yield from _image(km.container_image, f"{path}.containerImage")
    yield from _in_tree(km.in_tree_module_to_remove, km.in_tree_modules_to_remove, path)
    if (km.in_tree_modules_to_remove is not None and cont.in_tree_module_to_remove) or \
            (km.in_tree_module_to_remove and cont.in_tree_modules_to_remove is not None):
        yield Violation(path, "inTreeModuleToRemove and inTreeModulesToRemove cannot be mixed "
                        "between the mapping and the container")
    # A sign without unsignedImage or build is admitted, as KMM admits it: it fails
    # when signing (plan.sign_problem).
    yield from _sign_section(cont, km.sign, f"{path}.sign")


def _sign_section(cont: m.Container, sign: m.Sign | None, where: str) -> Iterator[Violation]:
    """KMM's validateSignSection, for the container's sign and each mapping's own (not
    the merged one): filesToSign given, each starting with dirName + '/'."""
    if sign is None:
        return
    if not sign.files_to_sign:
        yield Violation(f"{where}.filesToSign", "required (at least one path) when sign is set")
    root = cont.modprobe.dir_name
    for n, pattern in enumerate(sign.files_to_sign):
        if not pattern.startswith(root + "/"):
            yield Violation(f"{where}.filesToSign[{n}]",
                            f"{pattern!r} must be an absolute path or glob under dirName {root}")


def _modprobe(mp: m.Modprobe) -> Iterator[Violation]:
    path = f"{_CONTAINER}.modprobe"
    for name, args in (("args", mp.args), ("rawArgs", mp.raw_args)):
        for field, values in (("load", args.load if args else None),
                              ("unload", args.unload if args else None)):
            if values is not None and not values:
                yield Violation(f"{path}.{name}.{field}", "must have at least one item")
    raw_load = bool(mp.raw_args and mp.raw_args.load)
    raw_unload = bool(mp.raw_args and mp.raw_args.unload)
    if mp.module_name and (raw_load or raw_unload):
        yield Violation(f"{path}.rawArgs", "cannot be set when moduleName is set")
    elif not mp.module_name and not (raw_load and raw_unload):
        yield Violation(f"{path}.moduleName",
                        "required unless both rawArgs.load and rawArgs.unload are set")
    order = mp.modules_loading_order
    if order is None:
        return
    opath = f"{path}.modulesLoadingOrder"
    if len(order) < 2:
        yield Violation(opath, "needs at least two modules when set")
    if not mp.module_name:
        yield Violation(opath, "needs moduleName to be set")
    elif order and order[0] != mp.module_name:
        yield Violation(f"{opath}[0]", f"must be moduleName {mp.module_name!r}, got {order[0]!r}")
    seen: set[str] = set()
    for n, name in enumerate(order):
        if name in seen:
            yield Violation(f"{opath}[{n}]", f"{name!r} is listed twice")
        seen.add(name)
