"""Image state per kernel, as KMM's ModuleImagesConfig records it.

`states` is pure: it takes a `Lookup` (image, TLS) -> `Found | None`.
`image_lookup` is the executor: local container storage first (buildah), then
the registry (skopeo inspect), with the Module's imageRepoSecret written to a
0600 temporary authfile that is removed afterwards and never logged.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dtk.engine import buildah, skopeo
from dtk.errors import DtkError
from dtk.kmmapi import model as m
from dtk.kmmapi.authfile import authfile
from dtk.kmmapi.plan import KernelPlan, Plan, image_current, sign_problem
from dtk.kmmapi.validate import pull_pod_problem


class ImageState(enum.StrEnum):
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"  # missing, nothing can make it, skipWaitMissingImage
    NEEDS_BUILDING = "NeedsBuilding"
    NEEDS_SIGNING = "NeedsSigning"


@dataclass(frozen=True)
class Found:
    digest: str  # sha256:…
    where: str  # "local" or "registry"
    labels: Mapping[str, str] = field(default_factory=dict)
    local_differs: bool = False  # found in the registry, and local storage holds other bytes


@dataclass(frozen=True)
class KernelState:
    kernel: str
    image: str
    state: ImageState | None  # None: `error` says why nothing can make the image
    found: Found | None = None
    error: str | None = None


Lookup = Callable[[str, m.TLSOptions], Found | None]


def state_of(kp: KernelPlan, lookup: Lookup, generation: int | None = None,
             what: str = "Module") -> KernelState:
    """`generation`: the Module's imageRebuildTriggerGeneration. An image that exists
    but was made for another generation or another sign spec (its labels say) needs
    making again, as `dtk module build` decides, when the Module can make it. `what`
    names the Module, or the ModuleImagesConfig, in messages."""
    try:
        found = lookup(kp.image, kp.registry_tls)
    except DtkError as exc:  # the cause, and its fix when known
        return KernelState(kp.kernel, kp.image, None, error=exc.message.splitlines()[0]
                           + (f" (hint: {exc.hint})" if exc.hint else ""))
    if found is not None and usable(kp, found, generation):
        return KernelState(kp.kernel, kp.image, ImageState.EXISTS, found)
    if kp.build is not None:  # a build is followed by the sign step when both are set
        return KernelState(kp.kernel, kp.image, ImageState.NEEDS_BUILDING, found)
    if kp.sign is not None:
        problem = sign_problem(kp)
        return KernelState(kp.kernel, kp.image, None if problem else ImageState.NEEDS_SIGNING,
                           found, error=problem)
    return _missing(kp, what)


def _missing(kp: KernelPlan, what: str) -> KernelState:
    """An image that is not there and that nothing can make."""
    missing = f"image {kp.image} does not exist and the {what} has no build or sign for " \
        "this kernel"
    if kp.skip_wait_missing_image:  # KMM's pull pod is one-time then, and says so
        return KernelState(kp.kernel, kp.image, ImageState.DOES_NOT_EXIST, error=missing)
    return KernelState(kp.kernel, kp.image, None,
                       error=f"{missing}: KMM's pull pod keeps waiting for it")


def usable(kp: KernelPlan, found: Found, generation: int | None) -> bool:
    """Whether an existing image is the one the Module asks for: any image, when the
    Module cannot make one; else one labelled with its generation and sign spec."""
    if kp.build is None and kp.sign is None:
        return True
    return image_current(generation, kp, found.labels)


def states(plan: Plan, lookup: Lookup, generation: int | None = None) -> list[KernelState]:
    # KMM's pull pods for this plan cannot be made: no image state is ever recorded.
    problem = pull_pod_problem(plan.image_pull_policy) if plan.kind != m.MBSC_KIND else None
    if problem is not None:
        return [KernelState(kp.kernel, kp.image, None, error=problem) for kp in plan.kernels]
    return [state_of(kp, lookup, generation, plan.kind) for kp in plan.kernels]


def action_states(plan: Plan) -> list[KernelState]:
    """A ModuleBuildSignConfig's images: the MBSC reconciler looks nothing up, it runs
    each action; an action its image cannot run is an error (KMM's pod cannot be made)."""
    out = []
    for kp in plan.kernels:
        error = None
        if kp.action == m.BUILD_IMAGE and kp.build is None:
            error = "action BuildImage, but the image has no build section"
        elif kp.action == m.SIGN_IMAGE:
            error = "action SignImage, but the image has no sign section" \
                if kp.sign is None else sign_problem(kp)
        state = ImageState.NEEDS_BUILDING if kp.action == m.BUILD_IMAGE \
            else ImageState.NEEDS_SIGNING
        out.append(KernelState(kp.kernel, kp.image, None if error else state, error=error))
    return out


def failed(result: list[KernelState]) -> bool:
    """Whether a kernel gets no module: an error, or KMM's DoesNotExist."""
    return any(s.state in (None, ImageState.DOES_NOT_EXIST) for s in result)


def registry_host(image: str) -> str | None:
    """The registry an image names, or None for local-only names (no dot, colon, localhost)."""
    return skopeo.registry_of(image)


def local_found(image: str) -> Found | None:
    if not buildah.image_exists(image):
        return None
    data = buildah.inspect(image)
    digest = str(data.get("FromImageDigest") or "")
    labels = (data.get("OCIv1") or {}).get("config", {}).get("Labels") or {}
    return Found(digest, "local", dict(labels)) if digest else None


def remote_found(image: str, tls: m.TLSOptions, auth: Path | None,
                 check_local: bool = False) -> Found | None:
    """The manifest digest and labels in the registry, None if it says it is not there;
    `check_local`: also whether local storage holds other bytes under the name."""
    data = skopeo.remote_inspect(image, tls_verify=tls.tls_verify, authfile=auth)
    if data is None:
        return None
    return Found(str(data["Digest"]), "registry", dict(data.get("Labels") or {}),
                 check_local and _local_differs(image, tls, auth))


@contextmanager
def image_lookup(secret: m.Secret | None, *, prefer_registry: bool = False) -> Iterator[Lookup]:
    """A Lookup over local storage and registries; `prefer_registry` asks the registry
    first (render pins what the cluster will pull, which may differ from a local copy)."""
    with authfile(secret) as auth:
        def lookup(image: str, tls: m.TLSOptions) -> Found | None:
            def remote() -> Found | None:
                if registry_host(image) is None:
                    return None
                return remote_found(image, tls, auth, check_local=prefer_registry)

            def local() -> Found | None:
                return local_found(image)

            order = (remote, local) if prefer_registry else (local, remote)
            for step in order:
                found = step()
                if found is not None:
                    return found
            return None
        yield lookup


def _local_differs(image: str, tls: m.TLSOptions, auth: Path | None) -> bool:
    """Whether local storage holds an image under this name that is not the registry's
    (its id is not the registry's config digest): what vmtest would boot is then not
    what the cluster would pull."""
    if not buildah.image_exists(image):
        return False
    config = skopeo.remote_config_digest(image, tls_verify=tls.tls_verify, authfile=auth)
    return config is None or config.removeprefix("sha256:") != \
        buildah.image_id(image).removeprefix("sha256:")


def to_json(result: list[KernelState]) -> list[dict[str, object]]:
    return [{"kernel": s.kernel, "image": s.image,
             "state": s.state.value if s.state else None,
             "digest": s.found.digest if s.found else None,
             "where": s.found.where if s.found else None, "error": s.error} for s in result]
