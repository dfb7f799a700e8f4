"""`dtk module build`: every image a Module's plan needs, built, signed and pushed as KMM does.

Per kernel, in KMM's order: an image that already exists (in local storage or
its registry) is left alone, unless the Module's imageRebuildTriggerGeneration
differs from the one recorded on the image (label) or `--rebuild` is given;
otherwise the Dockerfile from the ConfigMap is built on dtk's build matrix
(toolkits, DTK_BASE, the input-hash cache, cells in parallel), then signed
(from the built image, or from `unsignedImage`, pulled first when it lives
only in a registry). With build and sign, the build writes KMM's
intermediate name (`plan.intermediate_image`) and only the signed result is
ever tagged `containerImage`: a failed signing leaves that name absent, never
an unsigned image a later run would take for done. The signed image's label
records the sign spec (`plan.sign_digest`), so a Module that gains or changes
its `sign` section is not satisfied by an image made without it. With `--push`,
every local image the plan names is then compared with the registry's (config
digest against image id) and pushed where they differ, in parallel. The
imageRepoSecret is a 0600 authfile for the whole run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from dtk import paths
from dtk.distro import catalog_problems
from dtk.distro.debian import DebianArchive
from dtk.driver.base import ensure_base
from dtk.driver.matrix import RunOptions, resolve_toolkits, run_matrix
from dtk.driver.outcome import KMM_TOOLS, Layout, Outcome, Status
from dtk.driver.plan import BuildOptions, BuildSecret, Cell, Matrix, plan_matrix
from dtk.driver.remotecache import RegistryCache
from dtk.driver.sources import containerfile_source
from dtk.engine import buildah, skopeo
from dtk.engine.registry import RegistryError
from dtk.errors import DtkError
from dtk.files import host_key
from dtk.kernel import keyring
from dtk.kmm.state import registry_host
from dtk.kmmapi import model as m
from dtk.kmmapi.authfile import authfile
from dtk.kmmapi.plan import (
    DTK_AUTO,
    GENERATION_LABEL,
    MODULE_LABEL,
    SIGN_LABEL,
    KernelPlan,
    Plan,
    image_current,
    resource_name,
    sign_problem,
)
from dtk.kmod import sign
from dtk.kmod.image import sign_image
from dtk.progress import Monitor
from dtk.toolkit.images import ToolkitImage, ensure_toolkit

_PUSHES = 4  # pushes at once: network-bound, and registries throttle more


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
    pushed: str = ""  # the digest this run pushed, only once the registry has it all
    registry: str = ""  # the digest the registry already held with the same bytes
    note: str = ""  # what the push step found (another image under the name)
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

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KernelResult:
        """A result as `to_json` wrote it (a shard's, for `dtk report merge`)."""
        try:
            return cls(str(data["kernel"]), str(data["image"]), str(data["action"]),
                       str(data.get("image_id", "")), str(data.get("pushed", "")),
                       str(data.get("registry", "")), str(data.get("note", "")),
                       str(data.get("reason", "")), tuple(map(str, data.get("tail", ()))),
                       str(data.get("log", "")), float(data.get("seconds", 0)),
                       bool(data.get("cached")))
        except (KeyError, ValueError, TypeError) as exc:
            raise DtkError(f"a result in the input is not dtk module build's: {exc}") from None


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


def signed_labels(mod: m.Module, kp: KernelPlan) -> dict[str, str]:
    """The labels of the final image of a kernel whose plan signs."""
    assert kp.sign is not None
    return {**labels_for(mod), SIGN_LABEL: kp.sign.digest}


def current(mod: m.Module, kp: KernelPlan, labels: dict[str, str]) -> bool:
    return image_current(mod.image_rebuild_trigger_generation, kp, labels)


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
        if request.push:
            results.update(_sync_all(run, plan, results))
    return [replace(results[kp.kernel], seconds=results[kp.kernel].seconds
                    or time.monotonic() - run.started[kp.kernel]) for kp in plan.kernels]


def _existing(run: _Run, kp: KernelPlan) -> KernelResult | None:
    """The result for a kernel whose image already exists; None if it must be made."""
    if run.request.rebuild and (kp.build or kp.sign):
        return None
    try:
        if buildah.image_exists(kp.image) and current(run.mod, kp, buildah.labels(kp.image)):
            # With --push, _sync_all makes the registry hold these very bytes.
            return KernelResult(kp.kernel, kp.image, "exists", buildah.image_id(kp.image))
        if registry_host(kp.image) is not None:
            data = skopeo.remote_inspect(kp.image, tls_verify=kp.registry_tls.tls_verify,
                                         authfile=run.auth)
            if data is not None and current(run.mod, kp, dict(data.get("Labels") or {})):
                return KernelResult(kp.kernel, kp.image, "exists",
                                    registry=str(data["Digest"]))
    except DtkError as exc:
        return _registry_failed(run, KernelResult(kp.kernel, kp.image, "failed"), exc)
    if kp.build is None and kp.sign is None:
        return KernelResult(kp.kernel, kp.image, "failed",
                            reason=f"image {kp.image} does not exist and the Module has no "
                                   "build or sign for this kernel")
    return None


def _sync_all(run: _Run, plan: Plan, results: dict[str, KernelResult]
              ) -> dict[str, KernelResult]:
    """Every local image the plan names, made the registry's truth (in parallel: the
    images are independent); registry-only and failed kernels are left as they are."""
    todo = [kp for kp in plan.kernels if not results[kp.kernel].failed
            and results[kp.kernel].image_id and registry_host(kp.image) is not None]
    if not todo:
        return {}
    with ThreadPoolExecutor(max_workers=min(len(todo), _PUSHES),
                            thread_name_prefix="dtk-kmm-push") as pool:
        futures = {kp.kernel: pool.submit(_sync, run, kp, results[kp.kernel]) for kp in todo}
        return {kernel: future.result() for kernel, future in futures.items()}


def _sync(run: _Run, kp: KernelPlan, result: KernelResult) -> KernelResult:
    """Push the local image unless the registry holds the same bytes (its config digest
    is the local image's id); never raises. A registry that holds another image under
    the name gets this one, and the result says so."""
    tls, began = kp.registry_tls.tls_verify, time.monotonic()
    try:
        remote = skopeo.remote_config_digest(kp.image, tls_verify=tls, authfile=run.auth)
        if remote is not None and remote.removeprefix("sha256:") == \
                result.image_id.removeprefix("sha256:"):
            digest = skopeo.remote_digest(kp.image, tls_verify=tls, authfile=run.auth)
            return replace(result, registry=digest or "")
        run.monitor.step(f"{kp.kernel}: pushing {kp.image}")
        pushed = skopeo.push(kp.image, kp.image, tls_verify=tls, authfile=run.auth,
                             on_retry=lambda text: run.monitor.step(f"{kp.kernel}: {text}"))
    except DtkError as exc:
        return _registry_failed(run, result, exc)
    note = f"the registry held another image ({remote[:19]}…); pushed this one" \
        if remote else ""
    # A result without seconds yet is timed from the run's start (build_module).
    seconds = result.seconds + (time.monotonic() - began) if result.seconds else 0.0
    return replace(result, pushed=pushed, note=note, seconds=seconds)


def _registry_failed(run: _Run, result: KernelResult, exc: DtkError) -> KernelResult:
    """The cause is the reason; skopeo's own words and the fix go to the tail and to
    the run's registry log."""
    detail = exc.detail if isinstance(exc, RegistryError) else ""
    lines = exc.message.splitlines()
    tail = tuple(x for x in (*lines[1:], detail, f"hint: {exc.hint}" if exc.hint else "") if x)
    log = run.request.log_dir / "registry.log"
    with log.open("a") as sink:
        sink.write(f"{result.kernel} {result.image}\n  {exc.message}\n"
                   + "".join(f"  {x}\n" for x in tail))
    return replace(result, action="failed", reason=lines[0], tail=tail,
                   log=result.log or str(log))


def _build_all(run: _Run, kps: list[KernelPlan]) -> dict[str, Outcome]:
    """One matrix for every kernel that needs a build: toolkits first, cells in parallel."""
    if not kps:
        return {}
    archive = run.archive()

    def ensure(release: str) -> ToolkitImage:  # says "up to date" or builds it
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
            image_template=kp.build_image or kp.image, mod_namespace=run.mod.namespace,
            mod_name=run.mod.name,
            build_args=tuple((a.name, a.value) for a in kp.build.build_args
                             if a.name != DTK_AUTO),  # dtk's resolved toolkit goes in
            secrets=build_secrets(run.bundle, run.mod, kp.build.secrets),
            secrets_key=host_key(paths.cache_dir() / "keys" / "secrets-digest.key"),
            labels=tuple(sorted(labels_for(run.mod).items())),
            pull_tls_verify=kp.build.base_image_registry_tls.tls_verify,
            force=run.request.rebuild, layout=kmm_layout(run.mod))
        cells += plan_matrix([source], [kp.kernel], toolkits, base, options).cells
    # The cache speaks with the imageRepoSecret's credentials, as the pushes do.
    cache = replace(run.request.cache, authfile=run.auth) if run.request.cache else None
    outcomes = run_matrix(Matrix(tuple(cells)),
                          RunOptions(run.request.jobs, run.request.log_dir, authfile=run.auth,
                                     cache=cache),
                          run.monitor)
    return {o.kernel: o for o in outcomes}


def kmm_layout(mod: m.Module) -> Layout:
    """What KMM's worker needs of an image: modules under the Module's dirName, and a
    shell, cp and mkdir (it brings its own modprobe)."""
    assert mod.module_loader is not None
    return Layout(mod.module_loader.container.modprobe.dir_name, KMM_TOOLS)


def _dockerfile_source(run: _Run, kp: KernelPlan) -> Any:
    """The ConfigMap's Dockerfile on disk, with an empty context (KMM builds have none)."""
    assert kp.build is not None
    # Named as KMM names the kernel's build pod (177350a): one place per kernel and Module.
    where = run.request.log_dir / "dockerfiles" / resource_name(run.mod.name, "build", kp.kernel)
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
    """Sign what the matrix built (or sign-only kernels); never raises. Its time: the
    cell's build, then signing (pushing is `_sync_all`'s, for every kernel at once)."""
    began = time.monotonic()
    result = _sign_built(run, kp, outcome)
    return replace(result, seconds=(outcome.seconds if outcome else 0.0)
                   + time.monotonic() - began)


def _sign_built(run: _Run, kp: KernelPlan, outcome: Outcome | None) -> KernelResult:
    result = KernelResult(kp.kernel, kp.image, "built")
    if outcome is not None:
        result = replace(result, image_id=outcome.image_id, log=outcome.log,
                         cached=outcome.cached)
        if outcome.status is not Status.BUILT:
            reason = outcome.reason or outcome.status.value
            return replace(result, action="failed", reason=reason, tail=outcome.tail)
    try:
        if kp.sign is not None:
            run.monitor.step(f"{kp.kernel}: signing {kp.image}")
            signed = _sign(run, kp, built=outcome is not None)
            result = replace(result, image_id=signed,
                             action="built+signed" if outcome is not None else "signed")
    except DtkError as exc:
        lines = exc.message.splitlines()
        return replace(result, action="failed", reason=f"signing failed: {lines[0]}",
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
        keyring.parse_cert(value(signing.cert_secret, m.CERT_KEY), cert_where),
        mismatch=f"{key_where} is not the private key of {cert_where}")


def _sign(run: _Run, kp: KernelPlan, *, built: bool) -> str:
    assert kp.sign is not None
    problem = sign_problem(kp)
    if problem is not None:
        raise DtkError(problem.removeprefix("cannot sign: "))
    unsigned = kp.sign.unsigned_image
    pulled = False
    if not built and not buildah.image_exists(unsigned):
        if registry_host(unsigned) is None:
            raise DtkError(f"unsigned image {unsigned} is not in local storage")
        run.monitor.step(f"{kp.kernel}: pulling {unsigned}")
        skopeo.pull(unsigned, tls_verify=kp.sign.unsigned_image_registry_tls.tls_verify,
                    authfile=run.auth)
        pulled = True
    try:
        signer = signer_from(run.bundle, run.mod, kp.sign)
        signed = sign_image(unsigned, kp.image, list(kp.sign.files_to_sign_templates
                                                     or kp.sign.files_to_sign), kp.kernel,
                            signer=signer, labels=signed_labels(run.mod, kp))
    finally:
        if pulled and unsigned != kp.image:
            buildah.remove_image(unsigned)
    return signed.image_id
