"""`dtk module`: read KMM Module manifests; validate, plan and render them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from dtk import kernel as kern
from dtk.cli.common import json_option, print_json, print_table, say, sources_option
from dtk.distro.query import query_kernels
from dtk.distro.select import open_archive
from dtk.errors import DtkError
from dtk.kmm import kmmobjects
from dtk.kmm import render as renderer
from dtk.kmm import state as image_state
from dtk.kmm.nodes import read_nodes
from dtk.kmmapi import model as m
from dtk.kmmapi import plan as planner
from dtk.kmmapi import validate as validator
from dtk.kmmapi.imageplan import plan_images
from dtk.kmmapi.load import load_documents

F = TypeVar("F", bound=Callable[..., Any])


def _manifest_options(func: F) -> F:
    func = click.option("--module", "module_name", default=None, metavar="NAME",
                        help="Which Module, when the files hold several.")(func)
    func = click.option("-n", "--namespace", default=None,
                        help="Namespace for documents without one (default: 'default'); "
                             "as with kubectl, a document naming another one is an error.")(func)
    return click.option("-f", "--filename", "files", multiple=True, required=True,
                        type=click.Path(path_type=Path),
                        help="Manifest file or directory of *.yaml/*.yml/*.json "
                             "(repeatable): the Module and its ConfigMaps and Secrets.")(func)


def _kernel_options(func: F) -> F:
    func = click.option("--nodes", "nodes_file", type=click.Path(path_type=Path, dir_okay=False),
                        default=None, help="`kubectl get nodes -o json` output: the kernels of "
                        "the nodes the Module's selector selects.")(func)
    func = click.option("--kernels", "query", default=None, metavar="QUERY|@FILE",
                        help="Kernels from the catalog: e.g. 'rt,latest', '6.1', @file.")(func)
    func = click.option("--kernel", "kernel", multiple=True, metavar="RELEASE",
                        help="Kernel release as `uname -r` prints it (repeatable).")(func)
    return sources_option(func)


def catalog_kernels(query: str, sources: Path | None) -> list[str]:
    """The one call into the kernel catalog (it is moving; repoint it here only)."""
    return query_kernels(query, open_archive(sources).kernels())


def _kernels(mod: m.Module, kernel: tuple[str, ...], query: str | None, nodes_file: Path | None,
             sources: Path | None) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    for release in kernel:  # a tag-form kernel gets "did you mean", as check does
        kern.parse(release)
    nodes = read_nodes(nodes_file, mod.selector or {}, mod.tolerations) if nodes_file else {}
    wanted = [*kernel, *(catalog_kernels(query, sources) if query else []), *nodes]
    if not wanted:
        raise DtkError("no kernel given" + (" (no node matches the Module's selector)"
                                            if nodes_file else ""),
                       hint="pass --kernel RELEASE, --kernels QUERY or --nodes nodes.json")
    return list(dict.fromkeys(wanted)), nodes


def _load(files: tuple[Path, ...], namespace: str | None,
          kube: validator.KubeVersion | None = None,
          previous: tuple[Path, ...] = ()) -> m.Bundle:
    bundle = load_documents(files, namespace, kube)
    for note in bundle.skipped:
        _note(f"note: {note}")
    validator.check(bundle, kube, load_documents(previous, namespace) if previous else None)
    for warning in validator.warnings(bundle):
        _note(f"warning: {warning}")
    return bundle


def _plan(files: tuple[Path, ...], namespace: str | None, module_name: str | None,
          kernels: tuple[tuple[str, ...], str | None, Path | None, Path | None],
          toolkit: planner.Toolkit = planner.local_toolkit) -> tuple[m.Bundle, planner.Plan]:
    bundle = _load(files, namespace)
    mod = bundle.module(module_name)
    wanted, nodes = _kernels(mod, *kernels)
    return bundle, planner.plan(mod, wanted, bundle, toolkit=toolkit, nodes=nodes)


def _repo_secret(bundle: m.Bundle, plan: planner.Plan) -> m.Secret | None:
    mod = bundle.module(plan.module)
    return bundle.secret(mod.namespace, mod.image_repo_secret) if mod.image_repo_secret else None


def _images_config(bundle: m.Bundle, name: str | None) -> m.ImagesConfig | None:
    """The ModuleImagesConfig (else the ModuleBuildSignConfig) to plan, when the files
    hold one: it is the more specific request (render --kmm-objects writes both, and the
    Module is often beside them for its ConfigMaps and Secrets). None: plan the Module."""
    configs = [c for c in bundle.images_configs if name is None or c.name == name]
    chosen = [c for c in configs if c.kind == m.MIC_KIND] or configs
    if not chosen:
        return None
    if len(chosen) > 1:
        raise DtkError(f"several {chosen[0].kind}s given: " + ", ".join(
            f"{c.namespace}/{c.name}" for c in chosen), hint="pick one with --module NAME")
    others: list[m.ImagesConfig | m.Module] = [c for c in configs if c is not chosen[0]]
    for other in others + [x for x in bundle.modules if name is None or x.name == name]:
        kind = other.kind if isinstance(other, m.ImagesConfig) else "Module"
        _note(f"note: {kind} {other.namespace}/{other.name} not planned: the "
              f"{chosen[0].kind} is (give the files without it to plan it)")
    return chosen[0]


@click.group("module")
def module_group() -> None:
    """KMM Modules (`kmm.sigs.x-k8s.io/v1beta1`): validate, plan, build, vmtest,
    preflight and render."""


@module_group.command("validate")
@_manifest_options
@click.option("--kube-version", default=None, metavar="MAJOR.MINOR",
              help="The cluster's Kubernetes version, for KMM's version gates (spec.dra "
                   "needs 1.34); without it they are skipped, as KMM's hub webhook does.")
@click.option("--previous", multiple=True, type=click.Path(path_type=Path), metavar="FILE",
              help="The Modules as the cluster has them (`kubectl get module NAME -o yaml`): "
                   "apply KMM's update rules too (version to or from empty).")
@json_option
def validate_cmd(*, files: tuple[Path, ...], namespace: str | None, module_name: str | None,
                 kube_version: str | None, previous: tuple[Path, ...], as_json: bool) -> None:
    """Check manifests against KMM's schema and admission webhook (exit 2 on any error)."""
    kube = validator.parse_kube_version(kube_version) if kube_version else None
    bundle = _load(files, namespace, kube, previous)
    configs = [c for c in bundle.images_configs if module_name in (None, c.name)]
    mods = [x for x in bundle.modules if module_name in (None, x.name)]
    if not mods and not configs:
        bundle.module(module_name)  # raises: names what was given, and the fix
    if as_json:
        print_json([{"kind": "Module", "module": x.name, "namespace": x.namespace,
                     "valid": True} for x in mods] +
                   [{"kind": c.kind, "module": c.name, "namespace": c.namespace,
                     "valid": True} for c in configs])
        return
    others = f"{len(bundle.configmaps)} ConfigMap(s), {len(bundle.secrets)} Secret(s)"
    for x in mods:
        mappings = len(x.module_loader.container.kernel_mappings or ()) if x.module_loader else 0
        say(f"Module {x.namespace}/{x.name}: valid ({mappings} kernelMapping(s), {others})")
    for c in configs:
        say(f"{c.kind} {c.namespace}/{c.name}: valid ({len(c.images)} image(s), {others})")


@module_group.command("plan")
@_manifest_options
@_kernel_options
@click.option("--no-state", is_flag=True, help="Do not look the images up (no tools run).")
@click.option("--strict", is_flag=True,
              help="Exit 1 when a kernel given matches no mapping (KMM loads nothing there).")
@json_option
def plan_cmd(*, files: tuple[Path, ...], namespace: str | None, module_name: str | None,
             kernel: tuple[str, ...], query: str | None, nodes_file: Path | None,
             sources: Path | None, no_state: bool, strict: bool, as_json: bool) -> None:
    """Per kernel: the mapping KMM picks, its image, build and sign, and the image state.

    Given a ModuleImagesConfig (`render --kmm-objects` writes one; so does KMM's
    operator: `kubectl get mic NAME -o yaml`), its images are planned as KMM's
    reconcilers take them, with their kernels (no --kernel); given only a
    ModuleBuildSignConfig, its actions, without looking anything up.
    """
    bundle = _load(files, namespace)
    cfg = _images_config(bundle, module_name)
    if cfg is None:
        mod = bundle.module(module_name)
        wanted, nodes = _kernels(mod, kernel, query, nodes_file, sources)
        plan = planner.plan(mod, wanted, bundle, nodes=nodes)
        result = _states(plan, bundle.secret(mod.namespace, mod.image_repo_secret or ""),
                         mod.image_rebuild_trigger_generation, no_state)
    else:
        if kernel or query or nodes_file:
            raise DtkError(f"a {cfg.kind} names its kernels itself (spec.images[]."
                           "kernelVersion)", hint="drop --kernel, --kernels and --nodes")
        plan = plan_images(cfg, bundle)
        result = image_state.action_states(plan) if cfg.kind == m.MBSC_KIND else _states(
            plan, bundle.secret(cfg.namespace, cfg.image_repo_secret or ""),
            cfg.image_rebuild_trigger_generation, no_state)
    if as_json:
        print_json({**planner.to_json(plan), "states": image_state.to_json(result)})
    else:
        _plan_table(plan, result)
    if image_state.failed(result) or (strict and plan.unmatched):
        raise SystemExit(1)


def _states(plan: planner.Plan, secret: m.Secret | None, generation: int | None,
            no_state: bool) -> list[image_state.KernelState]:
    if no_state:
        return []
    with image_state.image_lookup(secret) as lookup:
        return image_state.states(plan, lookup, generation)


def _steps(plan: planner.Plan, kp: planner.KernelPlan) -> str:
    """What KMM runs for this image: an MBSC's one action, else build and/or sign."""
    if kp.action:
        steps = "build" if kp.action == m.BUILD_IMAGE else "sign"
    else:
        steps = "+".join(x for x, on in (("build", kp.build), ("sign", kp.sign)) if on) or "-"
    # pushBuiltImage false (a PreflightValidation's): KMM's pods build with --no-push.
    return steps if plan.push_built_image or steps == "-" else f"{steps} (no push)"


def _plan_table(plan: planner.Plan, result: list[image_state.KernelState]) -> None:
    rows = []
    for n, kp in enumerate(plan.kernels):
        s = result[n] if result else None
        state = "-" if s is None else (s.state.value if s.state else "error")
        source = f"images[{n}]" if plan.kind != "Module" \
            else f"[{kp.mapping_index}] {kp.matched_by} {kp.pattern}"
        rows.append([kp.kernel, source, kp.image, _steps(plan, kp), state,
                     ", ".join(kp.nodes) or "-"])
    rows += [[k, "no mapping matches", "-", "-", "-",
              ", ".join(plan.unmatched_nodes.get(k, ())) or "-"] for k in plan.unmatched]
    say(f"{plan.kind} {plan.namespace}/{plan.module}")
    print_table(["KERNEL", "MAPPING", "IMAGE", "STEPS", "STATE", "NODES"], rows)
    for kernel in plan.unmatched:
        where = plan.unmatched_nodes.get(kernel)
        _note(f"no mapping: {kernel}" + (f" (nodes: {', '.join(where)})" if where else "")
               + " — KMM loads nothing there")
    for s in result:
        if s.error:
            _note(f"error: {s.kernel}: {s.error}")


@module_group.command("render")
@_manifest_options
@_kernel_options
@click.option("-o", "--output", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Write the Module here (default: stdout).")
@click.option("--in-cluster-build", is_flag=True,
              help="Keep build and sign; point each kernel's build at its pushed toolkit.")
@click.option("--toolkit-registry", default=None, metavar="REG",
              help="Where toolkits were pushed (REG/driver-toolkit:<kernel>), for "
                   "--in-cluster-build.")
@click.option("--allow-local", is_flag=True,
              help="Pin images that live only in local storage (localhost/…), which no "
                   "cluster can pull (a test cluster loaded by hand can).")
@click.option("--kmm-objects", is_flag=True,
              help="Write what KMM's operator makes from the Module instead: its "
                   "ModuleImagesConfig and, for images to build or sign, its "
                   "ModuleBuildSignConfig.")
@click.option("--no-state", is_flag=True,
              help="With --kmm-objects: do not look the images up (no tools run), so no "
                   "ModuleBuildSignConfig.")
def render_cmd(*, files: tuple[Path, ...], namespace: str | None, module_name: str | None,
               kernel: tuple[str, ...], query: str | None, nodes_file: Path | None,
               sources: Path | None, output: Path | None, in_cluster_build: bool,
               toolkit_registry: str | None, allow_local: bool, kmm_objects: bool,
               no_state: bool) -> None:
    """Write the Module for the cluster: a literal mapping per kernel.

    By default each image is pinned by digest (name@sha256:…) and build and sign
    are dropped. The registry's digest is pinned, and only when it holds the bytes
    local storage has; an image only in local storage needs --allow-local. Only
    the Module is written, not its ConfigMaps or Secrets: apply those from your
    own files.
    """
    if in_cluster_build and not toolkit_registry:
        raise DtkError("--in-cluster-build needs --toolkit-registry REG",
                       hint="push toolkits with `dtk toolkit push`, then name that registry")
    kernels = (kernel, query, nodes_file, sources)
    if kmm_objects:
        _emit("---\n".join(renderer.to_yaml(d) for d in _kmm_objects(
            files, namespace, module_name, kernels, lookup=not no_state)), output)
        return
    if in_cluster_build:
        assert toolkit_registry is not None
        toolkit = planner.registry_toolkit(toolkit_registry)
        bundle, plan = _plan(files, namespace, module_name, kernels, toolkit)
        doc = renderer.render_in_cluster(bundle.module(plan.module), plan, toolkit)
    else:
        bundle, plan = _plan(files, namespace, module_name, kernels)
        generation = bundle.module(plan.module).image_rebuild_trigger_generation
        with image_state.image_lookup(_repo_secret(bundle, plan), prefer_registry=True) as look:
            found = {kp.kernel: look(kp.image, kp.registry_tls) for kp in plan.kernels}
        # An image made for another sign spec or generation is not pinned: build it first.
        usable = {kp.kernel: f for kp in plan.kernels
                  if (f := found[kp.kernel]) is not None
                  and image_state.usable(kp, f, generation)}
        digests, warnings = renderer.pins(plan, usable, allow_local=allow_local)
        for warning in warnings:
            _note(f"warning: {warning}")
        doc = renderer.render(bundle.module(plan.module), plan, digests)
    _emit(renderer.to_yaml(doc), output)
    for k in plan.unmatched:
        _note(f"note: no mapping matches {k}; it is left out")


def _emit(text: str, output: Path | None) -> None:
    if output:
        output.write_text(text)
    else:
        click.echo(text, nl=False)  # data: the objects as YAML


def _kmm_objects(files: tuple[Path, ...], namespace: str | None, module_name: str | None,
                 kernels: tuple[tuple[str, ...], str | None, Path | None, Path | None], *,
                 lookup: bool) -> list[dict[str, Any]]:
    """The MIC, and the MBSC when the image states (looked up as `plan` does) ask for a
    build or a signing."""
    bundle, plan = _plan(files, namespace, module_name, kernels)
    mod = bundle.module(plan.module)
    if not lookup:
        return [kmmobjects.module_images_config(mod, plan)]
    with image_state.image_lookup(_repo_secret(bundle, plan)) as look:
        states = {s.kernel: s for s in image_state.states(
            plan, look, mod.image_rebuild_trigger_generation)}
    docs = [kmmobjects.module_images_config(mod, plan)]
    mbsc = kmmobjects.module_build_sign_config(mod, plan, states)
    return docs + ([mbsc] if mbsc else [])


def _note(text: str) -> None:
    say(text, err=True)


def register(group: click.Group) -> None:
    group.add_command(module_group)
