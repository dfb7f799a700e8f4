"""`dtk module preflight --kernel NEXT`: KMM's PreflightValidation, and what it lacks.

KMM (api/v1beta2, PreflightValidation) checks per Module that the image for
NEXT exists, or builds and signs it (pushing only with pushBuiltImage), and
reports `verificationStatus` Success/Failure at `verificationStage` Image or
Done. dtk does the same, then also checks each module statically against
NEXT (`dtk check`) and boots NEXT loading it with the Module's own modprobe
spec (`dtk module vmtest`): an image that exists but would be refused is a
Failure here, where KMM would only find out on the upgraded node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from dtk.distro.debian import DebianArchive
from dtk.engine import skopeo
from dtk.errors import DtkError
from dtk.kernel import normalize
from dtk.kmm.build import BuildRequest, build_module
from dtk.kmm.vmtest import VmOptions, module_vmtest
from dtk.kmmapi import model as m
from dtk.kmmapi.authfile import authfile
from dtk.kmmapi.plan import Plan, plan
from dtk.kmod import check as chk
from dtk.kmod.image import read_image_index
from dtk.kmod.targets import check_target
from dtk.progress import Monitor
from dtk.toolkit import locate

API_VERSION = "kmm.sigs.x-k8s.io/v1beta2"
SUCCESS, FAILURE = "Success", "Failure"
STAGE_IMAGE, STAGE_DONE = "Image", "Done"


@dataclass(frozen=True)
class ModuleStatus:
    """PreflightValidationModuleStatus, plus dtk's check and boot results."""

    name: str
    namespace: str
    verification_status: str
    verification_stage: str
    status_reason: str
    last_transition_time: str
    image: str = ""
    image_action: str = ""
    check: tuple[str, ...] = ()  # one line per module: "x.ko: loads" / "x.ko: REFUSED: …"
    boot: str = ""  # the VM verdict and reason
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["check"] = list(self.check)
        return data

    def kmm_status(self) -> dict[str, str]:
        """The entry in PreflightValidation.status.modules, as KMM writes it."""
        return {"name": self.name, "namespace": self.namespace,
                "verificationStatus": self.verification_status,
                "statusReason": self.status_reason,
                "verificationStage": self.verification_stage,
                "lastTransitionTime": self.last_transition_time}


@dataclass(frozen=True)
class PreflightRequest:
    kernel: str
    build: BuildRequest  # push = pushBuiltImage
    vm: VmOptions = field(default_factory=VmOptions)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def preflight(bundle: m.Bundle, modules: list[m.Module], request: PreflightRequest,
              monitor: Monitor, archive: Callable[[], DebianArchive]) -> list[ModuleStatus]:
    return [preflight_one(bundle, mod, request, monitor, archive) for mod in modules]


def preflight_one(bundle: m.Bundle, mod: m.Module, request: PreflightRequest,
                  monitor: Monitor, archive: Callable[[], DebianArchive]) -> ModuleStatus:
    kernel = request.kernel
    status = ModuleStatus(mod.name, mod.namespace, FAILURE, STAGE_IMAGE, "", _now())
    try:
        p = plan(mod, [kernel], bundle)
    except DtkError as exc:
        return replace(status, status_reason=exc.message.splitlines()[0])
    if not p.kernels:
        return replace(status, status_reason=f"no kernelMapping matches kernel {kernel}")
    monitor.step(f"preflight {mod.namespace}/{mod.name} for {kernel}: image")
    (built,) = build_module(bundle, p, request.build, monitor, archive)
    status = replace(status, image=built.image, image_action=built.action)
    if built.failed:
        return replace(status, status_reason=f"image {built.image}: {built.reason}")
    status = replace(status, verification_stage=STAGE_DONE)
    return _verify(bundle, mod, p, request, monitor, status=status)


def _verify(bundle: m.Bundle, mod: m.Module, p: Plan, request: PreflightRequest,
            monitor: Monitor, *, status: ModuleStatus) -> ModuleStatus:
    """What KMM lacks: `dtk check` against NEXT, then a boot of NEXT loading it."""
    kernel, kp = request.kernel, p.kernels[0]
    monitor.step(f"preflight {mod.namespace}/{mod.name} for {kernel}: dtk check")
    try:
        lines, loads = _check(bundle, mod, kp.image, kp.registry_tls, kernel)
    except DtkError as exc:
        return replace(status, status_reason=f"dtk check: {exc.message.splitlines()[0]}")
    status = replace(status, check=tuple(lines))
    if not loads:
        return replace(status, status_reason=f"dtk check: {kernel} refuses the module: "
                       + next(line for line in lines if "REFUSED" in line))
    monitor.step(f"preflight {mod.namespace}/{mod.name} for {kernel}: boot")
    (vm,) = module_vmtest(bundle, p, request.vm, monitor)
    status = replace(status, boot=vm.verdict.value + (f": {vm.reason}" if vm.reason else ""))
    if not vm.verdict.ok:
        return replace(status, status_reason=f"booting {kernel} and loading it: {status.boot}")
    how = {"exists": "image exists"}.get(status.image_action, f"image {status.image_action}")
    return replace(status, verification_status=SUCCESS,
                   status_reason=f"Verification successful ({how}; dtk check: loads; "
                                 f"VM boot of {kernel}: {vm.verdict.value})")


def _check(bundle: m.Bundle, mod: m.Module, image: str, tls: m.TLSOptions,
           kernel: str) -> tuple[list[str], bool]:
    secret = bundle.secret(mod.namespace, mod.image_repo_secret) \
        if mod.image_repo_secret else None
    with authfile(secret) as auth:
        skopeo.ensure_local(image, tls_verify=tls.tls_verify, authfile=auth)
    assert mod.module_loader is not None
    dir_name = mod.module_loader.container.modprobe.dir_name.rstrip("/")
    target = read_image_index(image, f"{dir_name}/lib/modules")
    facts = locate.kernel_facts(kernel, download=True)
    verdicts = check_target(target, facts, chk.Policy())
    lines = []
    for v in verdicts:
        first = next((f.message for f in v.refusals), "")
        lines.append(f"{v.path}: loads" if v.loads else f"{v.path}: REFUSED: {first}")
    return lines, all(v.loads for v in verdicts)


def validation_object(statuses: list[ModuleStatus], kernel: str,
                      push_built_image: bool) -> dict[str, Any]:
    """A PreflightValidation (v1beta2) carrying the status dtk found."""
    return {"apiVersion": API_VERSION, "kind": "PreflightValidation",
            "metadata": {"name": f"preflight-{normalize(kernel).lower().replace('_', '-')}"},
            "spec": {"kernelVersion": kernel, "pushBuiltImage": push_built_image},
            "status": {"modules": [s.kmm_status() for s in statuses]}}
