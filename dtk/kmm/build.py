"""`dtk module build`: every image a Module's plan needs, built, signed and pushed as KMM does.

Per kernel, in KMM's order: an image that already exists (in local storage or
its registry) is left alone, unless the Module's imageRebuildTriggerGeneration
differs from the one recorded on the image (label) or `--rebuild` is given;
otherwise the Dockerfile from the ConfigMap is built on dtk's build matrix
(toolkits, DTK_BASE, the input-hash cache, cells in parallel), then signed
(from the built image, or from `unsignedImage`, pulled first when it lives
only in a registry) under the `containerImage` name, which KMM overwrites in
place, then pushed. The imageRepoSecret is a 0600 authfile for the whole run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dtk import paths
from dtk.distro import catalog_problems
from dtk.distro.debian import DebianArchive
from dtk.driver.base import ensure_base
from dtk.driver.matrix import RunOptions, resolve_toolkits, run_matrix
from dtk.driver.outcome import Outcome, Status
from dtk.driver.plan import BuildOptions, BuildSecret, Cell, Matrix, plan_matrix
from dtk.driver.remotecache import RegistryCache
from dtk.driver.sources import containerfile_source
from dtk.engine import buildah, skopeo
from dtk.errors import DtkError
from dtk.files import host_key
from dtk.kernel import normalize
from dtk.kmm import model as m
from dtk.kmm.plan import DTK_AUTO, KernelPlan, Plan
from dtk.kmm.state import authfile, registry_host
from dtk.kmod import sign
from dtk.kmod.image import sign_image
from dtk.progress import Monitor
from dtk.toolkit.images import ToolkitImage, ensure_toolkit

GENERATION_LABEL = "dtk.kmm.image-rebuild-trigger-generation"
MODULE_LABEL = "dtk.kmm.module"


@dataclass(frozen=True)
class BuildRequest:
    log_dir: Path
    push: bool = False
    rebuild: bool = False
    jobs: int = 1
    cache: RegistryCache | None = None  # the registry every machine shares (--cache)


@dataclass(frozen=True)
class KernelResult:
    kernel: str
    image: str
    action: str  # exists | built | signed | built+signed | failed
    image_id: str = ""
    pushed: str = ""  # the registry's digest, only once it has the whole image
    reason: str = ""
    tail: tuple[str, ...] = ()
    log: str = ""
    seconds: float = 0.0
    cached: bool = False  # built from dtk's input-hash cache: nothing compiled

    @property
    def failed(self) -> bool:
        return self.action == "failed"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["tail"] = list(self.tail)
        data["seconds"] = round(self.seconds, 1)
        return data


@dataclass
class _Run:
    bundle: m.Bundle
    mod: m.Module
    request: BuildRequest
    auth: Path | None
    monitor: Monitor
    archive: Callable[[], DebianArchive]
    started: dict[str, float] = field(default_factory=dict)


def labels_for(mod: m.Module) -> dict[str, str]:
    out = {MODULE_LABEL: f"{mod.namespace}/{mod.name}"}
    if mod.image_rebuild_trigger_generation is not None:
        out[GENERATION_LABEL] = str(mod.image_rebuild_trigger_generation)
    return out


def current(mod: m.Module, labels: dict[str, str]) -> bool:
    """An existing image counts unless the Module asks for another generation."""
    gen = mod.image_rebuild_trigger_generation
    return gen is None or labels.get(GENERATION_LABEL) == str(gen)


def build_module(bundle: m.Bundle, plan: Plan, request: BuildRequest, monitor: Monitor,
                 archive: Callable[[], DebianArchive]) -> list[KernelResult]:
    """Make every image of `plan`; one result per planned kernel, never raising for one."""
    mod = bundle.module(plan.module)
    secret = bundle.secret(mod.namespace, mod.image_repo_secret) \
        if mod.image_repo_secret else None
    with authfile(secret) as auth:
        run = _Run(bundle, mod, request, auth, monitor, archive)
        results: dict[str, KernelResult] = {}
        todo: list[KernelPlan] = []
        for kp in plan.kernels:
            run.started[kp.kernel] = time.monotonic()
            done = _existing(run, kp)
            if done is None:
                todo.append(kp)
            else:
                results[kp.kernel] = done
        built = _build_all(run, [kp for kp in todo if kp.build is not None])
        for kp in todo:
            results[kp.kernel] = _finish(run, kp, built.get(kp.kernel))
    return [replace(results[kp.kernel], seconds=results[kp.kernel].seconds
                    or time.monotonic() - run.started[kp.kernel]) for kp in plan.kernels]


def _existing(run: _Run, kp: KernelPlan) -> KernelResult | None:
    """The result for a kernel whose image already exists; None if it must be made."""
    if run.request.rebuild and (kp.build or kp.sign):
        return None
    try:
        if buildah.image_exists(kp.image) and current(run.mod, buildah.labels(kp.image)):
            image_id = buildah.image_id(kp.image)
            pushed = _push_if_missing(run, kp) if run.request.push else ""
            return KernelResult(kp.kernel, kp.image, "exists", image_id, pushed)
        if registry_host(kp.image) is not None:
            data = skopeo.remote_inspect(kp.image, tls_verify=kp.registry_tls.verify,
                                         authfile=run.auth)
            if data is not None and current(run.mod, dict(data.get("Labels") or {})):
                return KernelResult(kp.kernel, kp.image, "exists", pushed=str(data["Digest"]))
    except DtkError as exc:
        return KernelResult(kp.kernel, kp.image, "failed", reason=exc.message.splitlines()[0])
    if kp.build is None and kp.sign is None:
        return KernelResult(kp.kernel, kp.image, "failed",
                            reason=f"image {kp.image} does not exist and the Module has no "
                                   "build or sign for this kernel")
    return None


def _push_if_missing(run: _Run, kp: KernelPlan) -> str:
    """A local image the registry lacks is pushed (KMM's cluster pulls from there)."""
    if registry_host(kp.image) is None:
        return ""
    remote = skopeo.remote_inspect(kp.image, tls_verify=kp.registry_tls.verify,
                                   authfile=run.auth)
    if remote is not None and current(run.mod, dict(remote.get("Labels") or {})):
        return str(remote["Digest"])
    return _push(run, kp)


def _push(run: _Run, kp: KernelPlan) -> str:
    run.monitor.step(f"{kp.kernel}: pushing {kp.image}")
    return skopeo.push(kp.image, kp.image, tls_verify=kp.registry_tls.verify,
                       authfile=run.auth)


def _build_all(run: _Run, kps: list[KernelPlan]) -> dict[str, Outcome]:
    """One matrix for every kernel that needs a build: toolkits first, cells in parallel."""
    if not kps:
        return {}
    archive = run.archive()

    def ensure(release: str) -> ToolkitImage:
        run.monitor.step(f"toolkit for {release}")
        return ensure_toolkit(release, "auto", distro=archive, monitor=run.monitor)
    toolkits = resolve_toolkits([kp.kernel for kp in kps], catalog_problems(archive.kernels()),
                                ensure)
    needs_base = any(kp.build is not None and "DTK_BASE" in kp.build.dockerfile for kp in kps)
    base = ensure_base(archive.index, archive.os.arch) if needs_base else None
    cells: list[Cell] = []
    for kp in kps:
        assert kp.build is not None
        source = _dockerfile_source(run, kp)
        options = BuildOptions(
            image_template=kp.image, mod_namespace=run.mod.namespace, mod_name=run.mod.name,
            build_args=tuple((a.name, a.value) for a in kp.build.build_args
                             if a.name != DTK_AUTO),  # dtk's resolved toolkit goes in
            secrets=build_secrets(run.bundle, run.mod, kp.build.secrets),
            secrets_key=host_key(paths.cache_dir() / "keys" / "secrets-digest.key"),
            labels=tuple(sorted(labels_for(run.mod).items())),
            pull_tls_verify=kp.build.base_image_registry_tls.verify,
            force=run.request.rebuild)
        cells += plan_matrix([source], [kp.kernel], toolkits, base, options).cells
    # The cache speaks with the imageRepoSecret's credentials, as the pushes do.
    cache = replace(run.request.cache, authfile=run.auth) if run.request.cache else None
    outcomes = run_matrix(Matrix(tuple(cells)),
                          RunOptions(run.request.jobs, run.request.log_dir, authfile=run.auth,
                                     cache=cache),
                          run.monitor)
    return {o.kernel: o for o in outcomes}


def _dockerfile_source(run: _Run, kp: KernelPlan) -> Any:
    """The ConfigMap's Dockerfile on disk, with an empty context (KMM builds have none)."""
    assert kp.build is not None
    where = run.request.log_dir / "dockerfiles" / normalize(kp.kernel)
    (where / "context").mkdir(parents=True, exist_ok=True)
    dockerfile = where / "Dockerfile"
    dockerfile.write_text(kp.build.dockerfile)
    return containerfile_source(dockerfile, where / "context", run.mod.name)


def build_secrets(bundle: m.Bundle, mod: m.Module, names: tuple[str, ...]
                  ) -> tuple[BuildSecret, ...]:
    out = []
    for name in dict.fromkeys(names):
        secret = bundle.secret(mod.namespace, name)
        if secret is None:  # load() checks this; build_secrets is public
            raise DtkError(f"build secret {mod.namespace}/{name} is not among the documents")
        out.append(BuildSecret(name, tuple(sorted(secret.data.items()))))
    return tuple(out)


def _finish(run: _Run, kp: KernelPlan, outcome: Outcome | None) -> KernelResult:
    """Sign and push what the matrix built (or sign-only kernels); never raises.
    Its time: the cell's build, then signing and pushing."""
    began = time.monotonic()
    result = _sign_and_push(run, kp, outcome)
    return replace(result, seconds=(outcome.seconds if outcome else 0.0)
                   + time.monotonic() - began)


def _sign_and_push(run: _Run, kp: KernelPlan, outcome: Outcome | None) -> KernelResult:
    result = KernelResult(kp.kernel, kp.image, "built")
    if outcome is not None:
        result = replace(result, image_id=outcome.image_id, log=outcome.log,
                         cached=outcome.cached)
        if outcome.status is not Status.BUILT:
            reason = outcome.reason or outcome.status.value
            return replace(result, action="failed", reason=reason, tail=outcome.tail)
    stage = "signing"
    try:
        if kp.sign is not None:
            run.monitor.step(f"{kp.kernel}: signing {kp.image}")
            signed = _sign(run, kp, built=outcome is not None)
            result = replace(result, image_id=signed,
                             action="built+signed" if outcome is not None else "signed")
        stage = "pushing"
        if run.request.push and registry_host(kp.image) is not None:
            result = replace(result, pushed=_push(run, kp))
    except DtkError as exc:
        lines = exc.message.splitlines()
        return replace(result, action="failed", reason=f"{stage} failed: {lines[0]}",
                       tail=tuple(line.strip() for line in lines[1:]))
    return result


def signer_from(bundle: m.Bundle, mod: m.Module, signing: Any) -> sign.Signer:
    """The key and cert from their Secrets, in memory only (never a file, log or layer)."""
    def value(name: str, key: str) -> bytes:
        secret = bundle.secret(mod.namespace, name)
        if secret is None or key not in secret.data:
            raise DtkError(f"Secret {mod.namespace}/{name} has no key '{key}'")
        return secret.data[key]
    key_where = f"Secret {mod.namespace}/{signing.key_secret} key '{m.KEY_KEY}'"
    cert_where = f"Secret {mod.namespace}/{signing.cert_secret} key '{m.CERT_KEY}'"
    return sign.signer_for(
        sign.parse_key(value(signing.key_secret, m.KEY_KEY), key_where),
        sign.parse_cert(value(signing.cert_secret, m.CERT_KEY), cert_where),
        mismatch=f"{key_where} is not the private key of {cert_where}")


def _sign(run: _Run, kp: KernelPlan, *, built: bool) -> str:
    assert kp.sign is not None
    unsigned = kp.sign.unsigned_image
    pulled = False
    if not built and not buildah.image_exists(unsigned):
        if registry_host(unsigned) is None:
            raise DtkError(f"unsigned image {unsigned} is not in local storage")
        run.monitor.step(f"{kp.kernel}: pulling {unsigned}")
        skopeo.pull(unsigned, tls_verify=kp.sign.unsigned_image_registry_tls.verify,
                    authfile=run.auth)
        pulled = True
    try:
        signer = signer_from(run.bundle, run.mod, kp.sign)
        signed = sign_image(unsigned, kp.image, list(kp.sign.files_to_sign_templates
                                                     or kp.sign.files_to_sign), kp.kernel,
                            signer=signer, labels=labels_for(run.mod))
    finally:
        if pulled and unsigned != kp.image:
            buildah.remove_image(unsigned)
    return signed.image_id
