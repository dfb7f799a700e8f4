"""The objects KMM's operator makes from a Module, rendered ahead of time: its
ModuleImagesConfig and, for images that need building or signing, its
ModuleBuildSignConfig (KMM's internal CRDs, kmm.sigs.x-k8s.io/v1beta1).

As KMM's module reconciler (`handleMIC`) makes them: one MIC named after the Module,
one image per kernel of the targeted nodes (the kernel mapper's merged and substituted
build and sign, the registryTLS, the dirName), the Module's imageRepoSecret,
imagePullPolicy, imageRebuildTriggerGeneration and tolerations, `pushBuiltImage: true`;
duplicates by image dropped (`filterDuplicateImages`). The MBSC (same name) carries
the images the MIC reconciler hands on: `BuildImage` for NeedsBuilding, `SignImage` for
NeedsSigning, with the MIC's imageRepoSecret, pushBuiltImage and tolerations
(internal/mbsc). Owner references are left out: they need the Module's uid, which only
the cluster knows. Pure: the image states come in from the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dtk.kernel import kmm_variables, substitute
from dtk.kmm.state import ImageState, KernelState
from dtk.kmmapi import model as m
from dtk.kmmapi.merge import merged_build, merged_sign
from dtk.kmmapi.plan import KernelPlan, Plan

API_VERSION = m.API_VERSION


def _tls(tls: m.TLSOptions | None) -> dict[str, bool]:
    # TLSOptions' fields are omitempty bools: false is left out, so the default is {}.
    tls = tls or m.TLSOptions()
    out = {}
    if tls.insecure:
        out["insecure"] = True
    if tls.insecure_skip_tls_verify:
        out["insecureSkipTLSVerify"] = True
    return out


def _build(build: m.Build) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if build.build_args:
        out["buildArgs"] = [{"name": a.name, "value": a.value} for a in build.build_args]
    out["dockerfileConfigMap"] = {"name": build.dockerfile_configmap}
    out["baseImageRegistryTLS"] = _tls(build.base_image_registry_tls)
    if build.secrets:
        out["secrets"] = [{"name": s} for s in build.secrets]
    if build.kaniko_tag:
        out["kanikoParams"] = {"tag": build.kaniko_tag}
    if build.selector:
        out["selector"] = dict(build.selector)
    return out


def _sign(sign: m.Sign, kernel: str) -> dict[str, Any]:
    """KMM's getRelevantSign: unsignedImage and filesToSign substituted with the kernel
    variables (the normalised kernel), nothing else."""
    kvars = dict(kmm_variables(kernel))
    out: dict[str, Any] = {}
    if sign.unsigned_image:
        out["unsignedImage"] = substitute(sign.unsigned_image, kvars)
    out["unsignedImageRegistryTLS"] = _tls(sign.unsigned_image_registry_tls)
    out["keySecret"] = {"name": sign.key_secret}
    out["certSecret"] = {"name": sign.cert_secret}
    if sign.files_to_sign:
        out["filesToSign"] = [substitute(f, kvars) for f in sign.files_to_sign]
    return out


def image_spec(mod: m.Module, kp: KernelPlan) -> dict[str, Any]:
    """One ModuleImageSpec: what `handleMIC` takes from the ModuleLoaderData."""
    assert mod.module_loader is not None
    cont = mod.module_loader.container
    km = (cont.kernel_mappings or ())[kp.mapping_index]
    out: dict[str, Any] = {"image": kp.image, "kernelVersion": kp.kernel}
    build = merged_build(cont.build, km.build)
    sign = merged_sign(cont.sign, km.sign)
    if build is not None:
        out["build"] = _build(build)
    if sign is not None:
        out["sign"] = _sign(sign, kp.kernel)
    out["registryTLS"] = _tls(km.registry_tls or cont.registry_tls)
    out["dirName"] = cont.modprobe.dir_name
    return out


def _meta(mod: m.Module) -> dict[str, str]:
    return {"name": mod.name, "namespace": mod.namespace}


def module_images_config(mod: m.Module, plan: Plan) -> dict[str, Any]:
    assert mod.module_loader is not None
    images: dict[str, dict[str, Any]] = {}
    for kp in plan.kernels:
        images.setdefault(kp.image, image_spec(mod, kp))  # filterDuplicateImages
    spec: dict[str, Any] = {"images": list(images.values())}
    if mod.image_repo_secret:
        spec["imageRepoSecret"] = {"name": mod.image_repo_secret}
    # No omitempty on imagePullPolicy: KMM sends the Module's, "" when it sets none.
    spec["imagePullPolicy"] = mod.module_loader.container.image_pull_policy
    spec["pushBuiltImage"] = True  # handleMIC always pushes what it builds
    if mod.image_rebuild_trigger_generation is not None:
        spec["imageRebuildTriggerGeneration"] = mod.image_rebuild_trigger_generation
    if mod.tolerations:
        spec["tolerations"] = [_toleration(t) for t in mod.tolerations]
    return {"apiVersion": API_VERSION, "kind": "ModuleImagesConfig", "metadata": _meta(mod),
            "spec": spec}


def _toleration(t: m.Toleration) -> dict[str, Any]:
    out: dict[str, Any] = {k: v for k, v in (("key", t.key), ("operator", t.operator),
                                             ("value", t.value), ("effect", t.effect)) if v}
    if t.toleration_seconds is not None:
        out["tolerationSeconds"] = t.toleration_seconds
    return out


_ACTIONS = {ImageState.NEEDS_BUILDING: "BuildImage", ImageState.NEEDS_SIGNING: "SignImage"}


def module_build_sign_config(mod: m.Module, plan: Plan,
                             states: Mapping[str, KernelState]) -> dict[str, Any] | None:
    """The MBSC for the images whose state (per kernel) asks for a build or a signing;
    None when there is nothing to build or sign."""
    mic = module_images_config(mod, plan)
    by_image = {spec["image"]: spec for spec in mic["spec"]["images"]}
    images = []
    for kp in plan.kernels:
        state = states.get(kp.kernel)
        action = _ACTIONS.get(state.state) if state and state.state else None
        if action and by_image.pop(kp.image, None) is not None:
            images.append({**image_spec(mod, kp), "action": action})
    if not images:
        return None
    spec: dict[str, Any] = {"images": images}
    for key in ("imageRepoSecret", "pushBuiltImage", "tolerations"):
        if key in mic["spec"]:
            spec[key] = mic["spec"][key]
    return {"apiVersion": API_VERSION, "kind": "ModuleBuildSignConfig", "metadata": _meta(mod),
            "spec": spec}
