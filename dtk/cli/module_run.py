"""`dtk module build | preflight | vmtest`: the executing half of `dtk module`."""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import click
import yaml

from dtk import kernel as kern
from dtk import paths
from dtk.cli.common import (
    TaggedTally,
    interrupt_summary,
    json_option,
    monitor,
    print_json,
    print_table,
    say,
    stderr,
)
from dtk.cli.module import (
    _kernel_options,
    _load,
    _manifest_options,
    _note,
    _plan,
    _repo_secret,
    module_group,
)
from dtk.cli.secure import secure_boot_options, secure_boot_spec
from dtk.cli.vm import print_results
from dtk.distro.select import open_archive
from dtk.driver.remotecache import RegistryCache, check_repo
from dtk.driver.shard import assign, parse_shard
from dtk.errors import DtkError
from dtk.kmm import state as image_state
from dtk.kmm.build import BuildRequest, KernelResult, build_module
from dtk.kmm.preflight import PreflightRequest, preflight, validation_object
from dtk.kmm.vmtest import DEFAULT_FIRMWARE_HOST, VmOptions, module_vmtest, signing_certificates
from dtk.kmmapi import model as m
from dtk.kmmapi.plan import Plan


def log_dir(kind: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return paths.state_dir() / kind / f"{stamp}-{os.getpid()}"


@module_group.command("build")
@_manifest_options
@_kernel_options
@click.option("--push", is_flag=True, help="Push each image to its registry (KMM's cluster "
              "pulls from there), with the imageRepoSecret's credentials.")
@click.option("--rebuild", is_flag=True, help="Build and sign even images that exist.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=None,
              help="Images built at once (default: number of cores).")
@click.option("--shard", default=None, metavar="I/N",
              help="Only the kernels of part I of N (the same split on every machine).")
@click.option("--cache", "cache_repo", default=None, metavar="REGISTRY/REPO",
              help="A registry repository every machine shares: images found there under "
                   "their input hash are taken, not built; built ones are stored there.")
@json_option
def build_cmd(*, files: tuple[Path, ...], namespace: str | None, module_name: str | None,
              kernel: tuple[str, ...], query: str | None, nodes_file: Path | None,
              sources: Path | None, push: bool, rebuild: bool, jobs: int | None,
              shard: str | None, cache_repo: str | None, as_json: bool) -> None:
    """Build and sign every image the plan needs, as KMM's build and sign would.

    Images that exist (locally or in the registry) are kept unless
    imageRebuildTriggerGeneration changed or --rebuild is given.
    """
    started = time.monotonic()
    part = parse_shard(shard) if shard else None
    shared = RegistryCache(check_repo(cache_repo), monitor(as_json).step) if cache_repo \
        else None
    bundle, plan = _plan(files, namespace, module_name, (kernel, query, nodes_file, sources))
    # What `dtk report merge` puts the shards back together by: the whole plan's kernels.
    matrix = {"cells": [kp.kernel for kp in plan.kernels], "shard": str(part or "1/1")}
    if part:
        mine = assign([(kp.kernel, 1) for kp in plan.kernels], part.count)
        plan = replace(plan, kernels=tuple(kp for kp, s in zip(plan.kernels, mine, strict=True)
                                           if s == part.index))
    request = BuildRequest(log_dir("module-build"), push=push, rebuild=rebuild,
                           jobs=jobs or os.cpu_count() or 1, cache=shared)
    request.log_dir.mkdir(parents=True, exist_ok=True)
    tally = TaggedTally(monitor(as_json))
    with interrupt_summary(tally):
        results = build_module(bundle, plan, request, tally,
                               cache(lambda: open_archive(sources)))
    wall = time.monotonic() - started
    if as_json:
        print_json({"module": plan.module, "namespace": plan.namespace,
                    "results": [r.to_json() for r in results], "unmatched": list(plan.unmatched),
                    "log_dir": str(request.log_dir), "wall_seconds": round(wall, 1),
                    "matrix": matrix})
    else:
        report_results(results, wall)
    for k in plan.unmatched:
        _note(f"note: no mapping matches {k}; KMM loads nothing there")
    if any(r.failed for r in results):
        raise SystemExit(1)


def _short(digest: str) -> str:
    return digest[:19] + "…" if digest else "-"


def report_results(results: list[KernelResult], wall: float) -> None:
    """The build's table, its notes and failures, and a summary (also `dtk report merge`'s)."""
    rows = [[r.kernel, r.image, r.action + (" (cached)" if r.cached else ""),
             _short(r.pushed), _short(r.registry), f"{r.seconds:.1f}s"] for r in results]
    # PUSHED: what this run pushed; ALREADY THERE: the same bytes the registry held.
    # A failure's reason is printed once, below the table, in full.
    print_table(["KERNEL", "IMAGE", "ACTION", "PUSHED", "ALREADY THERE", "TIME"], rows)
    for r in results:
        if r.note:
            stderr(f"note: {r.kernel}: {r.note}")
    for r in results:
        if r.failed:
            stderr(f"\n{r.kernel} failed: {r.reason}")
            for line in r.tail:
                stderr(f"    {line}")
            if r.log:
                stderr(f"  full log: {r.log}")
    made = sum(r.action != "exists" and not r.failed for r in results)
    say(f"\n{made} made, {sum(r.action == 'exists' for r in results)} existed, "
               f"{sum(r.failed for r in results)} failed in {wall:.1f}s")


@module_group.command("preflight")
@click.option("-f", "--filename", "files", multiple=True, required=True,
              type=click.Path(path_type=Path), help="Manifests: every Module given is checked.")
@click.option("-n", "--namespace", default=None, help="Namespace for documents without one.")
@click.option("--kernel", required=True, metavar="NEXT",
              help="The kernel the cluster will be upgraded to (spec.kernelVersion).")
@click.option("--push-built-image", is_flag=True, help="Push images built or signed "
              "during preflight (spec.pushBuiltImage).")
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write a PreflightValidation (v1beta2) with this status here.")
@click.option("--timeout", default=60.0, show_default=True, help="Hard limit per VM, seconds.")
@json_option
def preflight_cmd(*, files: tuple[Path, ...], namespace: str | None, kernel: str,
                  push_built_image: bool, output: Path | None, timeout: float,
                  as_json: bool) -> None:
    """KMM's PreflightValidation for NEXT, plus `dtk check` and a VM boot of NEXT.

    Exit 1 if any Module fails.
    """
    kern.parse(kernel)
    bundle = _load(files, namespace)
    if not bundle.modules:
        raise DtkError("no Module among the documents given", hint="pass it with -f")
    build = BuildRequest(log_dir("module-preflight"), push=push_built_image,
                         jobs=os.cpu_count() or 1)
    build.log_dir.mkdir(parents=True, exist_ok=True)
    request = PreflightRequest(kernel, build, VmOptions(timeout_s=timeout))
    statuses = preflight(bundle, list(bundle.modules), request, monitor(as_json),
                         cache(lambda: open_archive(None)))
    doc = validation_object(statuses, kernel, push_built_image)
    if output:
        output.write_text(yaml.safe_dump(doc, sort_keys=False))
    if as_json:
        print_json({"kernel": kernel, "modules": [s.to_json() for s in statuses],
                    "preflightValidation": doc})
    else:
        print_table(["MODULE", "STATUS", "STAGE", "IMAGE", "CHECK", "BOOT", "REASON"],
                    [[f"{s.namespace}/{s.name}", s.verification_status, s.verification_stage,
                      s.image_action or "-",
                      ("loads" if s.check and all(c.endswith(": loads") for c in s.check)
                       else ("REFUSED" if s.check else "-")),
                      s.boot.split(":")[0] or "-", s.status_reason] for s in statuses])
    if any(s.verification_status != "Success" for s in statuses):
        raise SystemExit(1)


@module_group.command("vmtest")
@_manifest_options
@_kernel_options
@click.option("--firmware-host-path", default=DEFAULT_FIRMWARE_HOST, show_default=True,
              help="Where the worker copies firmwarePath's files on the node.")
@click.option("--check", "check_cmd", default="", metavar="CMD",
              help="Shell command run in the guest while the module is loaded.")
@click.option("--sig-enforce", is_flag=True, help="Boot with module.sig_enforce=1.")
@secure_boot_options
@click.option("--timeout", default=60.0, show_default=True, help="Hard limit per VM, seconds.")
@click.option("--keep-log", is_flag=True, help="Keep console logs.")
@json_option
def vmtest_cmd(*, files: tuple[Path, ...], namespace: str | None, module_name: str | None,
               kernel: tuple[str, ...], query: str | None, nodes_file: Path | None,
               sources: Path | None, firmware_host_path: str, check_cmd: str,
               sig_enforce: bool, secure_boot: bool, enrol: Path | None, enrol_with: str,
               vars_path: Path | None, timeout: float, keep_log: bool, as_json: bool) -> None:
    """Boot each kernel and load its image exactly as the Module's modprobe spec says,
    then unload it as KMM's worker would. Exit 0 only if every kernel loaded it.

    With --secure-boot and no --enrol, the certificate of the Module's sign section
    (its certSecret) is enrolled as a MOK, as on the nodes the Module is for."""
    secure = secure_boot_spec(secure_boot=secure_boot, enrol=enrol, enrol_with=enrol_with,
                              vars_path=vars_path)
    bundle, plan = _plan(files, namespace, module_name, (kernel, query, nodes_file, sources))
    if secure is not None and not secure.certs:
        secure = replace(secure, certs=signing_certificates(bundle, plan))
    options = VmOptions(firmware_host=firmware_host_path, check=check_cmd, timeout_s=timeout,
                        sig_enforce=sig_enforce, keep_log=keep_log, secure_boot=secure)
    results = module_vmtest(bundle, plan, options, monitor(as_json))
    if as_json:
        print_json([r.to_json() for r in results])
    else:
        print_results(results)
    for k in plan.unmatched:
        _note(f"note: no mapping matches {k}; KMM loads nothing there")
    _warn_if_not_the_registrys(bundle, plan)
    if not all(r.verdict.ok for r in results):
        raise SystemExit(1)


def _warn_if_not_the_registrys(bundle: m.Bundle, plan: Plan) -> None:
    """vmtest boots the local image; when the registry holds other bytes under the
    name, what it proved is not what a cluster pulls: say so."""
    with image_state.image_lookup(_repo_secret(bundle, plan), prefer_registry=True) as look:
        for kp in plan.kernels:
            try:
                found = look(kp.image, kp.registry_tls)
            except DtkError:
                continue  # the boot used a local image; an unreachable registry is no news
            if found is not None and found.local_differs:
                _note(f"warning: {kp.kernel}: booted the local {kp.image}; its registry holds "
                      "other bytes under that name (`dtk module build --push` pushes it)")


def register(group: click.Group) -> None:
    """The commands are on `dtk module` already (module_group); nothing more to add."""
    del group
