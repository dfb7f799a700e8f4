"""`dtk module vmtest`: boot each kernel and load its image exactly as the Module says.

The Module's modprobe spec becomes the guest worker's configuration —
moduleName, parameters, args.load/unload, rawArgs, dirName, firmwarePath (to
the configured host path), modulesLoadingOrder, the kernel's
inTreeModulesToRemove — and the guest unloads as KMM's worker does. Images
that live only in a registry are pulled first (registryTLS, imageRepoSecret).
Under Secure Boot, the certificate the Module signs with is enrolled as a MOK unless
another is named: the node's side of the Module's sign section.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dtk.engine import skopeo
from dtk.errors import DtkError
from dtk.kernel.verdict import Verdict
from dtk.kmmapi import model as m
from dtk.kmmapi.authfile import authfile
from dtk.kmmapi.plan import KernelPlan, Plan
from dtk.progress import Monitor
from dtk.vm import varstore
from dtk.vm.guest import GuestConfig
from dtk.vm.secureboot import SecureBootSpec
from dtk.vm.vmtest import VmResult, VmTestSpec, vmtest

DEFAULT_FIRMWARE_HOST = "/var/lib/firmware"  # KMM midstream's worker default


@dataclass(frozen=True)
class VmOptions:
    firmware_host: str = DEFAULT_FIRMWARE_HOST
    check: str = ""
    timeout_s: float = 60.0
    sig_enforce: bool = False
    keep_log: bool = False
    secure_boot: SecureBootSpec | None = None


def guest_config(mod: m.Module, kp: KernelPlan, options: VmOptions) -> GuestConfig:
    """KMM's worker configuration for one kernel, as the guest runs it. Pure."""
    assert mod.module_loader is not None
    probe = mod.module_loader.container.modprobe
    args, raw = probe.args, probe.raw_args
    return GuestConfig(
        module=probe.module_name or (probe.modules_loading_order or ("",))[0],
        dir_name=probe.dir_name, parameters=probe.parameters,
        load_args=(args.load or ()) if args else (),
        unload_args=(args.unload or ()) if args else (),
        raw_load=(raw.load or ()) if raw else (), raw_unload=(raw.unload or ()) if raw else (),
        loading_order=probe.modules_loading_order or (),
        in_tree_to_remove=kp.in_tree_modules_to_remove,
        firmware_host=options.firmware_host, check=options.check)


def vm_spec(mod: m.Module, kp: KernelPlan, options: VmOptions) -> VmTestSpec:
    assert mod.module_loader is not None
    probe = mod.module_loader.container.modprobe
    return VmTestSpec(image=kp.image, kernels=(kp.kernel,), guest=guest_config(mod, kp, options),
                      firmware_path=probe.firmware_path, timeout_s=options.timeout_s,
                      sig_enforce=options.sig_enforce, keep_log=options.keep_log,
                      secure_boot=options.secure_boot)


def signing_certificates(bundle: m.Bundle, plan: Plan) -> tuple[bytes, ...]:
    """The certificates the Module signs with (its sign sections' certSecret), checked as
    enrolment inputs: what a cluster's nodes must have enrolled for its images to load."""
    mod = bundle.module(plan.module)
    found: dict[bytes, None] = {}
    for kp in plan.kernels:
        if kp.sign is None:
            continue
        secret = bundle.secret(mod.namespace, kp.sign.cert_secret)
        where = f"Secret {mod.namespace}/{kp.sign.cert_secret} key '{m.CERT_KEY}'"
        if secret is None or m.CERT_KEY not in secret.data:
            raise DtkError(f"{where} is missing", hint="give the Secret with -f")
        found[varstore.check_certificate(secret.data[m.CERT_KEY], where)] = None
    return tuple(found)


def module_vmtest(bundle: m.Bundle, plan: Plan, options: VmOptions,
                  monitor: Monitor) -> list[VmResult]:
    """One verdict per planned kernel, kernels booted in parallel (one per core); an
    image that is missing or has nothing to load is `not-run`, never an exception."""
    mod = bundle.module(plan.module)
    secret = bundle.secret(mod.namespace, mod.image_repo_secret) \
        if mod.image_repo_secret else None
    with authfile(secret) as auth, ThreadPoolExecutor(
            max_workers=max(1, min(len(plan.kernels), os.cpu_count() or 1)),
            thread_name_prefix="dtk-kmm-vm") as pool:
        futures = [pool.submit(_one_kernel, mod, kp, options, auth, monitor)
                   for kp in plan.kernels]
        return [r for future in futures for r in future.result()]


def _one_kernel(mod: m.Module, kp: KernelPlan, options: VmOptions, auth: Path | None,
                monitor: Monitor) -> list[VmResult]:
    try:
        skopeo.ensure_local(kp.image, tls_verify=kp.registry_tls.tls_verify, authfile=auth)
        return vmtest(vm_spec(mod, kp, options), monitor)
    except DtkError as exc:
        why = " ".join(line.strip() for line in exc.message.splitlines())
        return [VmResult(kp.kernel, kp.image, Verdict.NOT_RUN, why)]
