"""KMM's admission rules: the Module webhook (`internal/webhook/module.go`) and
the CRD schema's own constraints (MinItems, required fields, CEL rules).

The aim is "a Module KMM admits, dtk admits": where KMM is lenient (an image
only needs a ':' or '@' somewhere, so 'host:5000/img' passes) dtk is too.
Every rule yields a `Violation` with the field path; all are reported at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from dtk.errors import ProblemsError
from dtk.k8snames import dns1123_subdomain_problems
from dtk.kmmapi import model as m
from dtk.kmmapi.goregexp import RegexpError, compile_regexp

# KMM's maxCombinedLength: checked for every Module (webhook validateModule), although
# its message says "when version is set" (pod names embed both).
MAX_NAME_NAMESPACE = 41
DRA_HOST_PATHS = ("/dev", "/sys", "/var", "/opt", "/run")
_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_CONTAINER = "spec.moduleLoader.container"


@dataclass(frozen=True)
class Violation:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def violations(mod: m.Module) -> list[Violation]:
    found: list[Violation] = []
    for rule in (_names, _selector, _exclusive, _tolerations, _dra, _loader):
        for v in rule(mod):
            if v not in found:  # merged sign specs repeat the container's problems
                found.append(v)
    return found


def check(bundle: m.Bundle) -> None:
    """Raise one DtkError listing every violation of every Module in the bundle."""
    found = [(f"Module {mod.namespace}/{mod.name}", mod.source, v)
             for mod in bundle.modules for v in violations(mod)]
    found += [(f"Secret {s.namespace}/{s.name}", s.source, v)
              for s in bundle.secrets.values() for v in _dockerconfigjson(s)]
    lines = [f"{what} ({source}): {v}" for what, source, v in found]
    problems = [{"file": source.file, "document": source.index + 1, "item": source.item,
                 "path": v.path, "message": v.message} for _what, source, v in found]
    if lines:
        raise ProblemsError(f"KMM would reject {len(lines)} field(s):\n  " + "\n  ".join(lines),
                            problems,
                       hint="these are the rules KMM's admission webhook and CRD enforce"
                       + (" (and, for Secrets, the API server)"
                          if any(x.startswith("Secret ") for x in lines) else ""))


def _dockerconfigjson(secret: m.Secret) -> Iterator[Violation]:
    """The API server's rule for this type (a JSON object under .dockerconfigjson),
    and the `auths` map every reader of it (kubelet, skopeo) takes credentials from.
    The content is never quoted: it holds credentials."""
    if secret.type != m.DOCKERCONFIGJSON:
        return
    path = "data[.dockerconfigjson]"
    raw = secret.data.get(".dockerconfigjson")
    if raw is None:
        yield Violation(path, f"required for type {m.DOCKERCONFIGJSON}")
        return
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" \
            if isinstance(exc, json.JSONDecodeError) else ""
        yield Violation(path, f"is not valid JSON{where}; content not shown")
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("auths"), dict):
        yield Violation(path, "has no 'auths' object: no registry credentials in it "
                              '(expected {"auths": {"HOST[:PORT]": {"auth": "…"}}})')


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
    yield from _host_paths(mod.dra, "spec.dra")


def _host_paths(body: Any, where: str) -> Iterator[Violation]:
    volumes = body.get("volumes") or []
    for n, volume in enumerate(volumes if isinstance(volumes, list) else []):
        host = volume.get("hostPath") if isinstance(volume, dict) else None
        path = host.get("path") if isinstance(host, dict) else None
        if isinstance(path, str) and not _under_any(path, DRA_HOST_PATHS):
            yield Violation(f"{where}.volumes[{n}].hostPath.path",
                            f"{path!r} is not under {', '.join(DRA_HOST_PATHS)}")


def _under_any(path: str, roots: tuple[str, ...]) -> bool:
    clean = re.sub(r"/+", "/", path).rstrip("/") or "/"
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
