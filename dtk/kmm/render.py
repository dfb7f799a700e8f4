"""The Module rewritten for the cluster: one `literal` mapping per planned kernel.

Pure: digests come in from the caller (`state.image_lookup`). Everything not
named here is kept exactly as the user wrote it, so a reviewer can diff the
output against the input.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import yaml

from dtk.engine.registry import parse
from dtk.errors import DtkError
from dtk.kmmapi import model as m
from dtk.kmmapi.plan import DTK_AUTO, KernelPlan, Plan, Toolkit

# Server-set metadata: applying it back would fail or pin a stale revision.
_SERVER_META = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
                "deletionTimestamp", "deletionGracePeriodSeconds")
_MATCH_KEYS = ("literal", "regexp", "containerImage", "build", "sign")


def pinned(image: str, digest: str) -> str:
    """name@sha256:… for an image given with a tag and/or digest."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:  # a tag, not a registry port
        name = name[:colon]
    return f"{name}@{digest}"


def _base(mod: m.Module) -> dict[str, Any]:
    doc = copy.deepcopy(dict(mod.raw))
    doc.pop("status", None)
    meta = doc.setdefault("metadata", {})
    for key in _SERVER_META:
        meta.pop(key, None)
    meta.setdefault("namespace", mod.namespace)
    return doc


def _mappings(doc: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    container: dict[str, Any] = doc["spec"]["moduleLoader"]["container"]
    return container, list(container.get("kernelMappings") or [])


def _literal(raw: Any, kp: KernelPlan, image: str) -> dict[str, Any]:
    kept = {k: v for k, v in (raw if isinstance(raw, dict) else {}).items()
            if k not in _MATCH_KEYS}
    return {"literal": kp.kernel, "containerImage": image, **kept}


def render(mod: m.Module, plan: Plan, digests: Mapping[str, str]) -> dict[str, Any]:
    """Pinned images, no build and no sign: the cluster only pulls what dtk built."""
    _require_kernels(plan)
    missing = [kp for kp in plan.kernels if kp.kernel not in digests]
    if missing:
        raise DtkError("no image for " + ", ".join(f"{kp.kernel} ({kp.image})" for kp in missing),
                       hint="run `dtk module build` first (and push the images)")
    doc = _base(mod)
    container, raw = _mappings(doc)
    container.pop("build", None)
    container.pop("sign", None)
    container["kernelMappings"] = [
        _literal(raw[kp.mapping_index], kp, pinned(kp.image, digests[kp.kernel]))
        for kp in plan.kernels]
    return doc


def render_in_cluster(mod: m.Module, plan: Plan, toolkit: Toolkit) -> dict[str, Any]:
    """Keep build and sign; each kernel's build whose Dockerfile uses DTK_AUTO gets
    DTK_AUTO = its pushed toolkit (upstream KMM does not inject it, midstream does)."""
    _require_kernels(plan)
    doc = _base(mod)
    container, raw = _mappings(doc)
    out = []
    for kp in plan.kernels:
        source = raw[kp.mapping_index] if isinstance(raw[kp.mapping_index], dict) else {}
        mapping = _literal(source, kp, kp.image)
        for key in ("build", "sign"):
            if key in source:
                mapping[key] = copy.deepcopy(source[key])
        if kp.build is not None and DTK_AUTO in kp.build.dockerfile:
            mapping["build"] = _with_toolkit(mapping.get("build"), kp, toolkit(kp.kernel))
        out.append(mapping)
    container["kernelMappings"] = out
    return doc


def _with_toolkit(build: Any, kp: KernelPlan, toolkit_image: str) -> dict[str, Any]:
    assert kp.build is not None
    body: dict[str, Any] = dict(build) if isinstance(build, dict) else {
        # A mapping-level build needs its own dockerfileConfigMap (a required field);
        # naming the container's keeps the merged result the same.
        "dockerfileConfigMap": {"name": kp.build.dockerfile_configmap}}
    args = [a for a in body.get("buildArgs") or [] if a.get("name") != DTK_AUTO]
    body["buildArgs"] = [*args, {"name": DTK_AUTO, "value": toolkit_image}]
    return body


def _require_kernels(plan: Plan) -> None:
    if not plan.kernels:
        raise DtkError("no kernel matches any kernelMapping: nothing to render",
                       hint="check the kernels given against the Module's literal/regexp")


def to_yaml(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False)


def pins(plan: Plan, found: Mapping[str, Any], *, allow_local: bool
         ) -> tuple[dict[str, str], list[str]]:
    """The digest to pin per kernel, and warnings; refuses what no cluster could pull
    or what is not the bytes dtk built and tested. `found` maps a kernel to its
    `state.Found` (or None)."""
    digests: dict[str, str] = {}
    warnings: list[str] = []
    problems: list[str] = []
    for kp in plan.kernels:
        where = found.get(kp.kernel)
        if where is None:
            continue  # render() says these are missing
        if where.where == "local" and parse(kp.image).registry is not None:
            problems.append(f"{kp.image} is only in local storage, not in its registry")
        elif where.where == "local" and not allow_local:
            problems.append(f"{kp.image} lives only in local storage (no registry in its "
                            "name): no cluster can pull it")
        elif where.where == "local":
            warnings.append(f"{kp.kernel}: {kp.image} lives only in local storage; pinned "
                            "anyway (--allow-local)")
        elif where.local_differs:
            problems.append(f"{kp.image}: the registry holds other bytes than local "
                            "storage (what `dtk module vmtest` boots)")
        digests[kp.kernel] = where.digest
    if problems:
        raise DtkError("cannot pin: " + "; ".join(problems),
                       hint="run `dtk module build --push` to push the local images (for "
                            "localhost/… names, name the containerImage with a registry), "
                            "or pass --allow-local to pin local-only images anyway")
    return digests, warnings
