"""`dtk node`: driver containers on a machine without Kubernetes."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import click

from dtk.cli.common import json_option, print_json, print_table
from dtk.errors import DtkError
from dtk.node import agent, declare, hooks, prepare
from dtk.node.layout import Layout

F = TypeVar("F", bound=Callable[..., Any])


def root_option(func: F) -> F:
    return click.option("--root", type=click.Path(path_type=Path, file_okay=False),
                        default=None,
                        help="Act on the system under this directory instead of / "
                             "(also DTK_NODE_ROOT): /etc/dtk, /var/lib/dtk, /boot and "
                             "/lib/modules are read and written under it.")(func)


def running_kernel() -> str:
    return os.uname().release


@click.group("node")
def node_group() -> None:
    """Driver containers on a machine without Kubernetes: declare modules once; each
    new kernel's images are fetched and checked when its package is installed, and
    loaded at boot the way KMM's worker loads them."""


@node_group.command("add")
@click.argument("image", required=False)
@click.option("-f", "--filename", "files", multiple=True,
              type=click.Path(path_type=Path, exists=True),
              help="KMM Module file(s), as `dtk module` and kubectl take them.")
@click.option("--module", "module_name", default=None, metavar="NAME",
              help="With IMAGE: the module modprobe loads (moduleName).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="With IMAGE: a module parameter (repeatable).")
@click.option("--name", default=None, help="With IMAGE: the declaration's name "
              "(default: the module name with '_' as '-').")
@click.option("--kernel", "kernels", multiple=True, metavar="RELEASE",
              help="Kernel(s) the declaration must resolve for (default: the running one).")
@click.option("--replace", is_flag=True,
              help="Replace a declaration of the same name (else that is an error).")
@click.option("--require-signature", is_flag=True,
              help="Fetch the module's images only where the host's containers policy "
                   "(/etc/containers/policy.json) requires them to be signed; skopeo "
                   "verifies the signatures.")
@root_option
@json_option
def add_cmd(*, image: str | None, files: tuple[Path, ...], module_name: str | None,
            params: tuple[str, ...], name: str | None, kernels: tuple[str, ...],
            replace: bool, require_signature: bool, root: Path | None,
            as_json: bool) -> None:
    """Declare a module: `-f MODULE.yaml`, or `IMAGE --module NAME` (IMAGE may hold
    ${KERNEL_FULL_VERSION}; oci-archive:PATH and oci:DIR work without a registry)."""
    layout = Layout.from_env(root)
    if bool(image) == bool(files):
        raise DtkError("give either -f MODULE.yaml or IMAGE --module NAME",
                       hint="dtk node add -f module.yaml, or dtk node add "
                            "reg/img:${KERNEL_FULL_VERSION} --module my_driver")
    if image:
        if not module_name:
            raise DtkError("IMAGE needs --module NAME (the module modprobe loads)")
        decl_name = name or module_name.replace("_", "-").lower()
        bundle = declare.image_bundle(declare.image_module(image, module_name, params,
                                                           decl_name))
    else:
        if module_name or params or name:
            raise DtkError("--module, --param and --name go with IMAGE, not -f",
                           hint="set moduleName and parameters in the Module file")
        bundle = declare.read_file_bundle(files)
    with layout.locked():
        added = declare.add(layout, bundle, kernels or (running_kernel(),),
                            replace=replace, require_signature=require_signature)
        hooks.install(layout)
    if as_json:
        print_json([declare.to_json(d) for d in added])
        return
    for decl in added:
        click.echo(f"declared {decl.name} ({decl.module_name}) in {decl.path}")


@node_group.command("list")
@root_option
@json_option
def list_cmd(root: Path | None, as_json: bool) -> None:
    """The declared modules."""
    decls = declare.declarations(Layout.from_env(root))
    if as_json:
        print_json([declare.to_json(d) for d in decls])
        return
    print_table(["NAME", "MODULE", "IMAGE"],
                [(d.name, d.module_name, ", ".join(
                    m["containerImage"] for m in declare.to_json(d)["kernelMappings"]))
                 for d in decls])


@node_group.command("remove")
@click.argument("name")
@root_option
@json_option
def remove_cmd(name: str, root: Path | None, as_json: bool) -> None:
    """Unload a declared module (KMM's way) and forget it and all dtk derived from it."""
    layout = Layout.from_env(root)
    with layout.locked():
        agent.remove(layout, name)
    if as_json:
        print_json({"removed": name})
    else:
        click.echo(f"removed {name}")


@node_group.command("prepare")
@click.option("--kernel", default=None, metavar="RELEASE",
              help="The kernel to prepare for (default: the running one).")
@click.option("--strict", is_flag=True,
              help="Exit 1 when a module is not ready (default: always 0, so that a kernel "
                   "package's installation never fails because of a driver).")
@root_option
@json_option
def prepare_cmd(kernel: str | None, strict: bool, root: Path | None, as_json: bool) -> None:
    """Fetch, unpack and check every declared module's image for KERNEL."""
    layout = Layout.from_env(root)
    release = kernel or running_kernel()
    with layout.locked():
        outcomes = prepare.prepare(layout, release, on_outcome=None if as_json
                                   else lambda o: click.echo(o.line()))
    if as_json:
        print_json([o.to_json() for o in outcomes])
    if strict and not all(o.ready for o in outcomes):
        raise SystemExit(1)


@node_group.command("status")
@click.option("--kernel", default=None, metavar="RELEASE",
              help="The kernel to ask about (default: the running one).")
@root_option
@json_option
def status_cmd(kernel: str | None, root: Path | None, as_json: bool) -> None:
    """Will each declared module load on KERNEL? yes/no and why, from `prepare`; for the
    kernel it was last loaded on, whether the boot loaded it (and why not)."""
    layout = Layout.from_env(root)
    outcomes = prepare.status(layout, kernel or running_kernel())
    loads = {o.name: agent.loaded_record(layout, o.name) for o in outcomes}
    loaded = {name: r for name, r in loads.items() if r is not None and r.kernel == (
        kernel or running_kernel())}
    if as_json:
        print_json([o.to_json() | {"loaded": asdict(loaded[o.name]) if o.name in loaded
                                   else None} for o in outcomes])
        return
    print_table(["NAME", "KERNEL", "READY", "LOADED", "REASON"],
                [(o.name, o.kernel, "yes" if o.ready else "no",
                  ("yes" if loaded[o.name].loaded else "no") if o.name in loaded else "-",
                  o.reason if o.name not in loaded or loaded[o.name].loaded
                  else loaded[o.name].reason) for o in outcomes])


@node_group.command("load")
@root_option
@json_option
def load_cmd(root: Path | None, as_json: bool) -> None:
    """Load every declared module for the running kernel (what dtk-node.service runs);
    exit 1 if one was not loaded, after trying all of them."""
    layout = Layout.from_env(root)
    with layout.locked():
        results = agent.load_all(layout, running_kernel())
    if as_json:
        print_json([asdict(r) for r in results])
    else:
        for result in results:
            click.echo(result.line())
    if not all(r.loaded for r in results):
        raise SystemExit(1)


@node_group.command("unload")
@click.argument("names", nargs=-1)
@root_option
@json_option
def unload_cmd(names: tuple[str, ...], root: Path | None, as_json: bool) -> None:
    """Unload declared modules (all without NAMES) as KMM's worker does."""
    layout = Layout.from_env(root)
    done = []
    with layout.locked():
        for name in names or tuple(declare.names(layout)):
            agent.unload_one(layout, declare.find(layout, name))
            done.append(name)
    if as_json:
        print_json({"unloaded": done})
    else:
        for name in done:
            click.echo(f"unloaded {name}")


@node_group.command("clean")
@click.option("--kernel", required=True, metavar="RELEASE",
              help="The kernel whose package was removed.")
@root_option
def clean_cmd(kernel: str, root: Path | None) -> None:
    """Forget what was prepared for a kernel (the kernel's postrm hook runs this)."""
    layout = Layout.from_env(root)
    with layout.locked():
        agent.forget_kernel(layout, kernel)


@node_group.command("install-hooks")
@root_option
@json_option
def install_hooks_cmd(root: Path | None, as_json: bool) -> None:
    """Write the kernel postinst/postrm hooks and dtk-node.service, and enable it
    (`dtk node add` does this too)."""
    written = hooks.install(Layout.from_env(root))
    if as_json:
        print_json([str(p) for p in written])
    else:
        for path in written:
            click.echo(f"wrote {path}")


def register(group: click.Group) -> None:
    group.add_command(node_group)
