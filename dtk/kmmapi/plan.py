"""What KMM would do for each kernel: pure, no I/O, no tools.

For every kernel: the first kernelMapping that matches (a literal exactly, a
regexp as Go's `regexp.MatchString` does: an unanchored RE2 search), the
image with KMM's variables substituted, the merged build and sign specs and
the build args KMM injects. Kernels no mapping matches are kept in
`Plan.unmatched` rather than dropped: on a cluster their nodes get no module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dtk.digest import parts_digest
from dtk.errors import DtkError
from dtk.kernel import kmm_build_args, kmm_variables, normalize, substitute
from dtk.kmmapi import model as m
from dtk.kmmapi.goregexp import compile_regexp
from dtk.kmmapi.merge import apply_overrides, merged_build, merged_sign

DTK_AUTO = "DTK_AUTO"
UNSIGNED_TAG_SUFFIX = "_kmm_unsigned"
GENERATION_LABEL = "dtk.kmm.image-rebuild-trigger-generation"
MODULE_LABEL = "dtk.kmm.module"
SIGN_LABEL = "dtk.kmm.sign"
Toolkit = Callable[[str], str]


def local_toolkit(kernel: str) -> str:
    """The toolkit `dtk toolkit build` tags for a kernel (tags cannot hold '+')."""
    return f"localhost/driver-toolkit:{normalize(kernel)}"


def registry_toolkit(registry: str) -> Toolkit:
    """Toolkits pushed under REG, as `render --in-cluster-build` points builds at them."""
    return lambda kernel: f"{registry.rstrip('/')}/driver-toolkit:{normalize(kernel)}"


@dataclass(frozen=True)
class PlannedBuild:
    dockerfile_configmap: str
    dockerfile: str
    build_args: tuple[m.BuildArg, ...]  # the user's, then KMM's (which win on a name)
    secrets: tuple[str, ...]
    base_image_registry_tls: m.TLSOptions
    # Build pods run here: build.selector only. KMM's buildSpec would fall back to the
    # Module's, but its ModuleBuildSignConfig path (createMLD) passes none (de3f8c9).
    selector: Mapping[str, str]
    kaniko_tag: str | None


@dataclass(frozen=True)
class PlannedSign:
    unsigned_image: str  # with a build: the intermediate image the build writes
    unsigned_image_registry_tls: m.TLSOptions
    key_secret: str
    cert_secret: str
    files_to_sign: tuple[str, ...]
    # As written, for signing: KMM substitutes the normalised kernel (`+` → `_`)
    # but images lay modules out under the raw one, so `dtk module build` tries both.
    files_to_sign_templates: tuple[str, ...] = ()
    # What the signed image's label records: the certificate's fingerprint (public; the
    # key must match it) and the paths, so that another sign spec is not satisfied by it.
    digest: str = ""


@dataclass(frozen=True)
class KernelPlan:
    kernel: str
    mapping_index: int
    matched_by: str  # "literal" or "regexp"
    pattern: str
    image: str
    registry_tls: m.TLSOptions
    build: PlannedBuild | None
    sign: PlannedSign | None
    in_tree_modules_to_remove: tuple[str, ...]
    nodes: tuple[str, ...] = ()
    build_image: str = ""  # where the build writes: `image`, or the intermediate when signing
    dir_name: str = m.DEFAULT_DIR_NAME
    # KMM's pull pod reports a missing image that nothing can make as DoesNotExist only
    # with this set (a ModuleImagesConfig's); otherwise it waits for the image.
    skip_wait_missing_image: bool = False
    action: str = ""  # a ModuleBuildSignConfig's BuildImage or SignImage


@dataclass(frozen=True)
class Plan:
    module: str
    namespace: str
    kernels: tuple[KernelPlan, ...]
    unmatched: tuple[str, ...]
    unmatched_nodes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    kind: str = "Module"  # or what was planned: a ModuleImagesConfig, an MBSC
    # As KMM's module reconciler hands them on (handleMIC): the Module's pull policy,
    # and every built image pushed; a MIC or MBSC says its own.
    image_pull_policy: str = ""
    push_built_image: bool = True


def dns_safe_kernel(kernel: str) -> str:
    """KMM's DNSSafeKernelVersion: the normalised kernel, lower case, '_' and '.' as '-',
    no '-' at either end."""
    return normalize(kernel).lower().replace("_", "-").replace(".", "-").strip("-")


def resource_name(module: str, action: str, kernel: str) -> str:
    """The name KMM gives a kernel's build or sign pod since 177350a (deterministic, so
    two reconciles make one pod): `<module>-build-<kernel>`, `<module>-sign-<kernel>`."""
    return f"{module}-{action}-{dns_safe_kernel(kernel)}"


def intermediate_image(name: str, namespace: str, image: str) -> str:
    """Where a build that is followed by signing writes, so that `image` only ever holds
    the signed result: KMM's IntermediateImageName (`AppendToTag(image,
    "<namespace>_<name>_kmm_unsigned")`, internal/module/helper.go until KMM 9d626f4,
    which now overwrites in place; dtk keeps the intermediate because it decides
    "exists" by the final name)."""
    return image + ("_" if ":" in image else ":") + f"{namespace}_{name}{UNSIGNED_TAG_SUFFIX}"


def sign_digest(cert: bytes, files_to_sign: Sequence[str]) -> str:
    """The sign spec as a signed image's label records it: the certificate's sha256
    fingerprint (public), never the key, and the filesToSign paths (substituted)."""
    return parts_digest("kmm-sign/1", parts_digest(cert), *files_to_sign)


def sign_problem(kp: KernelPlan) -> str | None:
    """Why the sign step cannot run, or None: without a build, only `unsignedImage`
    (after substitution) names what to sign. KMM admits such a Module and fails when it
    makes the sign pod (makeSignTemplate, "no image to sign given"); so does dtk."""
    if kp.sign is None or kp.build is not None or kp.sign.unsigned_image:
        return None
    return ("cannot sign: no image to sign given (the sign section has no unsignedImage "
            "and there is no build)")


def image_current(generation: int | None, kp: KernelPlan, labels: Mapping[str, str]) -> bool:
    """Whether an existing image with `labels` is what the Module asks for: not when it
    asks for another imageRebuildTriggerGeneration, nor for another signing than the
    one the image records (none, when the Module signs none)."""
    if generation is not None and labels.get(GENERATION_LABEL) != str(generation):
        return False
    return labels.get(SIGN_LABEL, "") == (kp.sign.digest if kp.sign else "")


def pull_policy(policy: str, image: str) -> str:
    """The policy KMM's pull pod runs with: Kubernetes defaults an empty one per image
    (SetDefaults_Container: Always for a `latest` or untagged image, else IfNotPresent)."""
    if policy:
        return policy
    name = image.split("@", 1)[0]
    digest = "@" in image
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else ""
    return "Always" if tag == "latest" or (not tag and not digest) else "IfNotPresent"


def find_mapping(mappings: Sequence[m.KernelMapping],
                 kernel: str) -> tuple[int, m.KernelMapping] | None:
    """First match wins, as in KMM's kernel mapper."""
    for n, km in enumerate(mappings):
        if km.literal and km.literal == kernel:
            return n, km
        if km.regexp and compile_regexp(km.regexp).search(kernel):
            return n, km
    return None


def plan(mod: m.Module, kernels: Iterable[str], bundle: m.Bundle, *,
         toolkit: Toolkit = local_toolkit,
         nodes: Mapping[str, tuple[str, ...]] | None = None) -> Plan:
    """The plan for `mod` on `kernels`; `nodes` (kernel -> node names) is informational."""
    if mod.module_loader is None:
        raise DtkError(f"Module {mod.namespace}/{mod.name} has no spec.moduleLoader",
                       hint="a device-plugin-only Module loads no out-of-tree module")
    cont = mod.module_loader.container
    planned, unmatched = [], []
    for kernel in dict.fromkeys(kernels):
        found = find_mapping(cont.kernel_mappings or (), kernel)
        if found is None:
            unmatched.append(kernel)
            continue
        kp = _kernel_plan(mod, cont, found, kernel, bundle=bundle, toolkit=toolkit)
        planned.append(replace(kp, nodes=(nodes or {}).get(kernel, ())))
    return Plan(mod.name, mod.namespace, tuple(planned), tuple(unmatched),
                {k: v for k, v in (nodes or {}).items() if k in unmatched},
                image_pull_policy=cont.image_pull_policy)


def _kernel_plan(mod: m.Module, cont: m.Container, found: tuple[int, m.KernelMapping],
                 kernel: str, *, bundle: m.Bundle, toolkit: Toolkit) -> KernelPlan:
    index, km = found
    kvars = kmm_variables(kernel)
    image_vars = {**kvars, "MOD_NAME": mod.name, "MOD_NAMESPACE": mod.namespace}
    image = substitute(km.container_image or cont.container_image, image_vars)
    build = merged_build(cont.build, km.build)
    sign = merged_sign(cont.sign, km.sign)
    in_tree = _in_tree(cont, km)
    planned_sign = planned_sign_for(sign, intermediate_image(mod.name, mod.namespace, image)
                                    if build else None, kvars,
                                    cert_of(bundle, mod.namespace, sign)) if sign else None
    return KernelPlan(
        kernel=kernel,
        mapping_index=index,
        matched_by="literal" if km.literal else "regexp",
        pattern=km.literal or km.regexp,
        image=image,
        registry_tls=km.registry_tls or cont.registry_tls or m.TLSOptions(),
        build=planned_build(mod.name, mod.namespace, build, kernel, bundle=bundle,
                            toolkit=toolkit) if build else None,
        sign=planned_sign,
        in_tree_modules_to_remove=tuple(in_tree),
        build_image=(planned_sign.unsigned_image if planned_sign else image) if build else "",
        dir_name=cont.modprobe.dir_name,
    )


def _in_tree(cont: m.Container, km: m.KernelMapping) -> tuple[str, ...]:
    """KMM's prepareModuleLoaderData: the mapping's list replaces the container's
    whenever it is given (`[]` means none), then a deprecated single name, the
    mapping's before the container's, replaces both."""
    names = cont.in_tree_modules_to_remove
    if km.in_tree_modules_to_remove is not None:
        names = km.in_tree_modules_to_remove
    single = km.in_tree_module_to_remove or cont.in_tree_module_to_remove
    return (single,) if single else tuple(names or ())


def cert_of(bundle: m.Bundle, namespace: str, sign: m.Sign) -> bytes:
    secret = bundle.secret(namespace, sign.cert_secret)
    return secret.data.get(m.CERT_KEY, b"") if secret else b""


def planned_build(name: str, namespace: str, build: m.Build, kernel: str, *, bundle: m.Bundle,
                  toolkit: Toolkit) -> PlannedBuild:
    """The build of Module (or MBSC) `name` for `kernel`, with KMM's build args."""
    cm = bundle.configmap(namespace, build.dockerfile_configmap)
    if cm is None or m.DOCKERFILE_KEY not in cm.data:  # load checks this; plan() is public
        raise DtkError(f"ConfigMap {namespace}/{build.dockerfile_configmap} with key "
                       f"'{m.DOCKERFILE_KEY}' is not among the documents given")
    dockerfile = cm.data[m.DOCKERFILE_KEY]
    injected = kmm_build_args(kernel, name, namespace)
    if DTK_AUTO in dockerfile:
        injected[DTK_AUTO] = toolkit(kernel)
    return PlannedBuild(
        dockerfile_configmap=build.dockerfile_configmap,
        dockerfile=dockerfile,
        build_args=apply_overrides(build.build_args,
                                   [m.BuildArg(k, v) for k, v in injected.items()]),
        secrets=build.secrets,
        base_image_registry_tls=build.base_image_registry_tls or m.TLSOptions(),
        selector=build.selector or {},
        kaniko_tag=build.kaniko_tag,
    )


def planned_sign_for(sign: m.Sign, built_image: str | None, kvars: Mapping[str, str] | None,
                     cert: bytes) -> PlannedSign:
    """The sign step: from the built image (dtk's intermediate) or `unsignedImage`.
    unsignedImage and filesToSign see the kernel variables only, not MOD_* (KMM #187);
    filesToSign gets the normalised kernel, as KMM does. `kvars` None: already
    substituted (a ModuleImagesConfig holds what KMM substituted from the Module)."""
    def sub(text: str) -> str:
        return substitute(text, dict(kvars)) if kvars is not None else text

    files = tuple(sub(f) for f in sign.files_to_sign)
    return PlannedSign(
        unsigned_image=built_image or sub(sign.unsigned_image),
        unsigned_image_registry_tls=sign.unsigned_image_registry_tls or m.TLSOptions(),
        key_secret=sign.key_secret,
        cert_secret=sign.cert_secret,
        files_to_sign=files,
        files_to_sign_templates=tuple(sign.files_to_sign),
        # The substituted paths, which a Module and the ModuleImagesConfig KMM makes from
        # it share, so that an image signed from either is current for both.
        digest=sign_digest(cert, files),
    )


def to_json(p: Plan) -> dict[str, Any]:
    """The plan as --json prints it (Dockerfile text left out: it is in the ConfigMap)."""
    def tls(t: m.TLSOptions) -> dict[str, bool]:
        return {"insecure": t.insecure, "insecureSkipTLSVerify": t.insecure_skip_tls_verify}

    def one(k: KernelPlan) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kernel": k.kernel, "mapping": k.mapping_index, "matchedBy": k.matched_by,
            "pattern": k.pattern, "image": k.image, "buildImage": k.build_image or None,
            "registryTLS": tls(k.registry_tls),
            "inTreeModulesToRemove": list(k.in_tree_modules_to_remove), "nodes": list(k.nodes),
            "build": None, "sign": None,
            # What KMM names this kernel's pods (177350a), to find them with kubectl.
            "kmmBuildPod": resource_name(p.module, "build", k.kernel) if k.build else None,
            "kmmSignPod": resource_name(p.module, "sign", k.kernel) if k.sign else None,
            "dirName": k.dir_name, "skipWaitMissingImage": k.skip_wait_missing_image,
            "action": k.action or None,
            # What KMM's pull pod for this image runs with (none for an MBSC: no pull pod).
            "pullPolicy": pull_policy(p.image_pull_policy, k.image)
            if p.kind != m.MBSC_KIND else None}
        if k.build:
            out["build"] = {
                "dockerfileConfigMap": k.build.dockerfile_configmap,
                "buildArgs": [{"name": a.name, "value": a.value} for a in k.build.build_args],
                "secrets": list(k.build.secrets), "selector": dict(k.build.selector),
                "baseImageRegistryTLS": tls(k.build.base_image_registry_tls),
                "kanikoTag": k.build.kaniko_tag}
        if k.sign:
            out["sign"] = {
                "unsignedImage": k.sign.unsigned_image, "keySecret": k.sign.key_secret,
                "certSecret": k.sign.cert_secret, "filesToSign": list(k.sign.files_to_sign),
                "unsignedImageRegistryTLS": tls(k.sign.unsigned_image_registry_tls)}
        return out
    return {"kind": p.kind, "module": p.module, "namespace": p.namespace,
            "imagePullPolicy": p.image_pull_policy, "pushBuiltImage": p.push_built_image,
            "kernels": [one(k) for k in p.kernels], "unmatched": list(p.unmatched),
            "unmatchedNodes": {k: list(v) for k, v in p.unmatched_nodes.items()}}
