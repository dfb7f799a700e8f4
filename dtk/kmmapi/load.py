"""Manifests into a `Bundle`, as `kubectl apply -f` takes them, strictly.

Files or directories (a directory means its *.yaml, *.yml and *.json files,
not recursively, as kubectl without -R), multi-document YAML and `kind: List`.
Every problem is collected and reported at once as one `DtkError` naming the
file, the object and the field path; Secret values never appear in it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from dtk.errors import DtkError, ProblemsError
from dtk.k8snames import config_map_key_problems, dns1123_label_problems, dns1123_subdomain_problems
from dtk.kmmapi import model as m
from dtk.kmmapi import spec as spec_reader
from dtk.kmmapi.images import images_config
from dtk.kmmapi.reader import Reader, child
from dtk.kmmapi.validate import KubeVersion, violations

_SUFFIXES = (".yaml", ".yml", ".json")
# ObjectMeta fields kubectl passes through; dtk reads name and namespace only.
_META = ["name", "namespace", "labels", "annotations", "generateName", "uid",
         "resourceVersion", "generation", "creationTimestamp", "deletionTimestamp",
         "deletionGracePeriodSeconds", "finalizers", "ownerReferences", "managedFields"]
_MAX_SHOWN = 40  # errors on one screen
_KINDS = {"Module": m.API_VERSION, m.MIC_KIND: m.API_VERSION, m.MBSC_KIND: m.API_VERSION,
          "ConfigMap": "v1", "Secret": "v1"}
_READ = "Module, ModuleImagesConfig, ModuleBuildSignConfig, ConfigMap and Secret"
_Object = m.Module | m.ImagesConfig | m.ConfigMap | m.Secret


def load_documents(paths: Sequence[Path], namespace: str | None = None,
                   kube: KubeVersion | None = None) -> m.Bundle:
    """Read every -f path; `namespace` is -n (None: documents' own, else 'default');
    `kube`: the cluster's version for KMM's version gates, when known."""
    r = Reader()
    objects: list[_Object] = []
    clean: set[m.Source] = set()  # documents that read without a schema error
    skipped: list[str] = []
    for source, doc in _documents(paths):
        other = _skipped(source, doc)
        if other:
            skipped.append(other)
            continue
        before = len(r.errors)
        obj = _object(r, doc, source, namespace)
        if len(r.errors) == before:
            clean.add(source)
        _prefix(r, before, str(source))
        r.place(before, source.file, source.index, source.item)
        if obj is not None:
            objects.append(obj)
    bundle = _bundle(r, objects)
    check_references(r, bundle)
    if r.errors:
        # What the webhook says too, in the same pass: a missing Secret must not hide
        # it (a Module with schema errors is left out: its defaults would only add noise).
        _webhook_too(r, [mod for mod in bundle.modules if mod.source in clean], kube)
        shown = r.errors[:_MAX_SHOWN]
        more = len(r.errors) - len(shown)
        text = "\n  ".join(shown) + (f"\n  … and {more} more" if more else "")
        raise ProblemsError(f"invalid manifests ({len(r.errors)} problem(s)):\n  {text}",
                            r.problems, hint=_hint(r.problems))
    return replace(bundle, skipped=tuple(skipped))


_MISSING = "is not among the documents given"


def _webhook_too(r: Reader, modules: list[m.Module], kube: KubeVersion | None) -> None:
    """KMM's admission verdict on these Modules, as problems of their documents."""
    for mod in modules:
        for v in violations(mod, kube):
            r.errors.append(f"Module {mod.namespace}/{mod.name} ({mod.source}): {v}")
            r.problems.append({"file": mod.source.file, "document": mod.source.index + 1,
                               "item": mod.source.item, "path": v.path,
                               "message": v.message, "rule": "webhook"})


# Whose rule each problem is, so that the hint says who refuses what, truly: the API
# server (schema, names), KMM's webhook, or dtk, which needs the referenced objects now
# (the API server admits a Module without them; KMM fails later, when it uses them).
_RULES = {
    "schema": "the API server refuses the fields named above (schema, object names)",
    "webhook": "KMM's admission webhook refuses the Module fields named above",
    "reference": "the API server admits a Module whose ConfigMaps or Secrets are missing or "
                 "unusable, but KMM fails when it builds, signs or pulls, and dtk needs them "
                 "now: pass them with -f",
    "dtk": "an object defined twice is ambiguous: keep one definition",
}


def _hint(problems: list[dict[str, Any]]) -> str:
    """The fix that is true for these problems, and whose rule each kind is."""
    rules = list(dict.fromkeys(str(p.get("rule") or "schema") for p in problems))
    text = "; ".join(_RULES[rule] for rule in rules)
    if any(_MISSING in str(p["message"]) for p in problems):
        text += (". Make a signing key and cert with `dtk keygen`, then the Secrets with "
                 "`kubectl create secret generic NAME --from-file=key=signing_key.pem -n NS "
                 "--dry-run=client -o yaml` (cert: --from-file=cert=signing_cert.pem; registry "
                 "credentials: `kubectl create secret docker-registry NAME --docker-server=… "
                 "--dry-run=client -o yaml`)")
    return text


def _mark(r: Reader, start: int, rule: str) -> None:
    for problem in r.problems[start:]:
        problem.setdefault("rule", rule)


def _skipped(source: m.Source, doc: Any) -> str | None:
    """Why a document is left out: another kind of object (a directory for `kubectl
    apply -f` holds Deployments and Services too) or an empty file; None to read it."""
    if doc is None:
        return f"{source.file}: empty (no document in it), skipped"
    if not isinstance(doc, dict):
        return None
    kind, api = doc.get("kind"), doc.get("apiVersion")
    if not (isinstance(kind, str) and isinstance(api, str)) or kind in _KINDS:
        return None
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{source}: {kind} {name or '(no name)'} skipped (dtk module reads {_READ})"


def _prefix(r: Reader, start: int, where: str) -> None:
    r.errors[start:] = [f"{where}: {e}" for e in r.errors[start:]]


def _files(paths: Sequence[Path]) -> Iterator[tuple[Path, bool]]:
    """Each file, and whether it was named itself (not found in a directory)."""
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _SUFFIXES)
            if not found:
                raise DtkError(f"directory {path} has no *.yaml, *.yml or *.json file")
            yield from ((p, False) for p in found)
        elif path.is_file():
            yield path, True
        else:
            raise DtkError(f"{path}: no such file or directory",
                           hint="-f takes a manifest file or a directory of them")


def _documents(paths: Sequence[Path]) -> Iterator[tuple[m.Source, Any]]:
    for path, named in _files(paths):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise DtkError(f"{path} is not valid YAML or JSON: {_yaml_reason(exc)}") from None
        if all(doc is None for doc in docs):
            if named:
                raise DtkError(f"{path} is empty: it holds no YAML or JSON document",
                               hint="give the file with the Module (and its ConfigMaps and "
                                    "Secrets)")
            yield m.Source(str(path), 0), None  # noted as skipped
            continue
        for index, doc in enumerate(docs):
            if doc is None:  # an empty document between '---' separators
                continue
            if isinstance(doc, dict) and doc.get("kind") == "List":
                for n, item in enumerate(doc.get("items") or []):
                    yield m.Source(str(path), index, n), item
            else:
                yield m.Source(str(path), index), doc


def _yaml_reason(exc: Exception) -> str:
    # A YAML error's str() quotes the offending line, which could be a Secret's value.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or type(exc).__name__
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _object(r: Reader, doc: Any, source: m.Source, namespace: str | None) -> _Object | None:
    if not isinstance(doc, dict):
        r.fail("(document)", "must be an object with apiVersion and kind")
        return None
    kind, api = doc.get("kind"), doc.get("apiVersion")
    expected = _KINDS
    if kind not in expected:
        r.fail("kind", f"{kind!r} is not one dtk module reads ({_READ})")
        return None
    if api != expected[kind]:
        r.fail("apiVersion", f"{kind} must be {expected[kind]}, got {api!r}")
        return None
    name, ns = _metadata(r, doc.get("metadata"), namespace)
    return _READERS[kind](r, doc, source, name, ns)


def _metadata(r: Reader, value: Any, namespace: str | None) -> tuple[str, str]:
    body = r.obj(value, "metadata", _META, ["name"])
    name = r.string(body.get("name"), "metadata.name")
    own = r.string(body.get("namespace"), "metadata.namespace")
    if own and namespace and own != namespace:
        # kubectl refuses this too rather than guessing which one was meant.
        r.fail("metadata.namespace", f"is {own!r} but -n/--namespace is {namespace!r}")
    # The API server's rules: names become directories, mount targets and pod names.
    if body.get("name") is not None:
        _name_rule(r, name, "metadata.name", dns1123_subdomain_problems)
    ns = own or namespace or "default"
    _name_rule(r, ns, "metadata.namespace", dns1123_label_problems)
    return name, ns


def _name_rule(r: Reader, value: str, path: str, rule: Callable[[str], list[str]]) -> None:
    problems = rule(value)
    if problems:
        r.fail(path, f"{_shown(value)} is invalid: " + "; ".join(problems))


def _shown(value: str) -> str:
    """A hostile name as one short, printable quote (it may hold newlines or escapes)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _module(r: Reader, doc: dict[str, Any], source: m.Source, name: str,
            ns: str) -> m.Module:
    r.obj(doc, "", ["apiVersion", "kind", "metadata", "spec", "status"], ["spec"])
    fields = spec_reader.spec(r, doc.get("spec", {}))
    return m.Module(name=name, namespace=ns, source=source, raw=doc, **fields)


def _configmap(r: Reader, doc: dict[str, Any], source: m.Source, name: str,
               ns: str) -> m.ConfigMap:
    r.obj(doc, "", ["apiVersion", "kind", "metadata", "data", "binaryData", "immutable"])
    r.boolean(doc.get("immutable"), "immutable")
    data = r.string_map(doc.get("data"), "data") or {}
    binary = _base64_map(r, doc.get("binaryData"), "binaryData")
    for field, keys, other in (("data", data, "binaryData"), ("binaryData", binary, "data")):
        for key in keys:
            _name_rule(r, key, child(field, key), config_map_key_problems)
            # ValidateConfigMap: one key cannot be in both maps.
            if key in (binary if field == "data" else data):
                r.fail(child(field, key), f"duplicate of key present in {other}")
    return m.ConfigMap(name, ns, source, data, binary)


def _base64_map(r: Reader, value: Any, path: str) -> dict[str, bytes]:
    """A map of base64 values ([]byte in Go), decoded as the API server decodes them."""
    out: dict[str, bytes] = {}
    for key, text in (r.string_map(value, path) or {}).items():
        try:
            out[key] = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            r.fail(child(path, key), "is not valid base64 (value not shown)")
            out[key] = b""  # the key is there: one error, not a knock-on "has no key"
    return out


def _secret(r: Reader, doc: dict[str, Any], source: m.Source, name: str, ns: str) -> m.Secret:
    r.obj(doc, "", ["apiVersion", "kind", "metadata", "data", "stringData", "type",
                    "immutable"])
    r.boolean(doc.get("immutable"), "immutable")
    data = _base64_map(r, doc.get("data"), "data")
    for key in data:
        _name_rule(r, key, child("data", key), config_map_key_problems)
    # As the API server does: stringData is merged over data, and wins.
    for key, text in (r.string_map(doc.get("stringData"), "stringData") or {}).items():
        _name_rule(r, key, child("stringData", key), config_map_key_problems)
        data[key] = text.encode()
    kind = r.string(doc.get("type"), "type") or "Opaque"
    return m.Secret(name, ns, source, kind, data)


_READERS: dict[str, Callable[[Reader, dict[str, Any], m.Source, str, str], _Object]] = {
    "Module": _module, m.MIC_KIND: images_config, m.MBSC_KIND: images_config,
    "ConfigMap": _configmap, "Secret": _secret}


def _bundle(r: Reader, objects: list[_Object]) -> m.Bundle:
    seen: dict[tuple[str, str, str], m.Source] = {}
    for obj in objects:
        key = (obj.kind if isinstance(obj, m.ImagesConfig) else type(obj).__name__,
               obj.namespace, obj.name)
        if key in seen:
            r.fail(f"{obj.source}", f"{key[0]} {obj.namespace}/{obj.name} is also defined "
                   f"in {seen[key]}")
            r.place(len(r.problems) - 1, obj.source.file, obj.source.index, obj.source.item)
        seen[key] = obj.source
    _mark(r, 0, "schema")  # what came before: the reader's schema and name checks
    for problem in r.problems:
        if "is also defined in" in str(problem["message"]):
            problem["rule"] = "dtk"
    return m.Bundle(
        modules=tuple(o for o in objects if isinstance(o, m.Module)),
        configmaps={(o.namespace, o.name): o for o in objects if isinstance(o, m.ConfigMap)},
        secrets={(o.namespace, o.name): o for o in objects if isinstance(o, m.Secret)},
        images_configs=tuple(o for o in objects if isinstance(o, m.ImagesConfig)),
    )


def check_references(r: Reader, bundle: m.Bundle) -> None:
    """Every ConfigMap and Secret a Module (or a ModuleImagesConfig, MBSC) names must be
    given, with the key KMM reads."""
    owners: list[tuple[str, m.Module | m.ImagesConfig,
                       Iterator[tuple[str, str, str, str | None]]]] = [
        ("Module", mod, _references(mod)) for mod in bundle.modules]
    owners += [(cfg.kind, cfg, _config_references(cfg)) for cfg in bundle.images_configs]
    for what, owner, references in owners:
        before = len(r.errors)
        for path, kind, name, key in references:
            _reference(r, bundle, owner.namespace, (path, kind, name, key))
        _prefix(r, before, f"{owner.source} {what} {owner.namespace}/{owner.name}")
        r.place(before, owner.source.file, owner.source.index, owner.source.item)
        _mark(r, before, "reference")


def _reference(r: Reader, bundle: m.Bundle, ns: str,
               ref: tuple[str, str, str, str | None]) -> None:
    path, kind, name, key = ref
    obj: m.ConfigMap | m.Secret | None = (bundle.configmap(ns, name) if kind == "ConfigMap"
                                          else bundle.secret(ns, name))
    if obj is None:
        r.fail(path, f"{kind} {ns}/{name} is not among the documents given")
        return
    keys = obj.data.keys()
    if key and key not in keys:
        r.fail(path, f"{kind} {ns}/{name} has no key {key!r} "
               f"(keys: {', '.join(sorted(keys)) or 'none'})")
    if key == ".dockerconfigjson" and isinstance(obj, m.Secret) \
            and obj.type != m.DOCKERCONFIGJSON:
        r.fail(path, f"Secret {ns}/{name} must be of type {m.DOCKERCONFIGJSON}, "
               f"got {obj.type!r}")


def _config_references(cfg: m.ImagesConfig) -> Iterator[tuple[str, str, str, str | None]]:
    if cfg.image_repo_secret:
        yield "spec.imageRepoSecret.name", "Secret", cfg.image_repo_secret, ".dockerconfigjson"
    for n, image in enumerate(cfg.images):
        yield from _build_sign_refs(f"spec.images[{n}]", image.build, image.sign)


def _references(mod: m.Module) -> Iterator[tuple[str, str, str, str | None]]:
    """(field path, kind, name, required key) for each reference in the Module."""
    if mod.image_repo_secret:
        yield "spec.imageRepoSecret.name", "Secret", mod.image_repo_secret, ".dockerconfigjson"
    if mod.module_loader is None:
        return
    base = "spec.moduleLoader.container"
    cont = mod.module_loader.container
    yield from _build_sign_refs(base, cont.build, cont.sign)
    for n, km in enumerate(cont.kernel_mappings or ()):
        yield from _build_sign_refs(f"{base}.kernelMappings[{n}]", km.build, km.sign)


def _build_sign_refs(path: str, build: m.Build | None,
                     sign: m.Sign | None) -> Iterator[tuple[str, str, str, str | None]]:
    if build is not None and build.dockerfile_configmap:
        yield (f"{path}.build.dockerfileConfigMap.name", "ConfigMap", build.dockerfile_configmap,
               m.DOCKERFILE_KEY)
    for n, secret in enumerate(build.secrets if build else ()):
        if secret:
            yield f"{path}.build.secrets[{n}].name", "Secret", secret, None
    if sign is not None:
        if sign.key_secret:
            yield f"{path}.sign.keySecret.name", "Secret", sign.key_secret, m.KEY_KEY
        if sign.cert_secret:
            yield f"{path}.sign.certSecret.name", "Secret", sign.cert_secret, m.CERT_KEY
