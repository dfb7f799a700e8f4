"""`dtk toolkit …`: build, show, list, inspect, push and prune toolkit images."""

from __future__ import annotations

from pathlib import Path

import click

from dtk import kernel as kern
from dtk.cli.common import (
    human_size,
    json_option,
    monitor,
    print_json,
    print_table,
    registry_auth_options,
    say,
    sources_option,
    stderr,
)
from dtk.distro import find_kernel
from dtk.distro.debian import DebianArchive
from dtk.distro.select import open_archive
from dtk.driver.remotecache import RegistryCache, check_repo, toolkit_entry
from dtk.engine import buildah, skopeo
from dtk.progress import Monitor
from dtk.toolkit import plan as tplan
from dtk.toolkit.images import ToolkitImage, ensure_toolkit, is_current
from dtk.toolkit.locate import find_toolkit
from dtk.toolkit.prune import plan_prune, prune
from dtk.toolkit.query import inspect_toolkit, list_toolkits

_RT_HELP = "RT sibling to include: auto (same source's rt kernel), none, or a release."


@click.group("toolkit")
def toolkit() -> None:
    """Driver toolkit images: one per kernel release, with its RT sibling."""


@toolkit.command("build")
@click.option("--kernel", "kernels", multiple=True, required=True, metavar="RELEASE",
              help="Kernel release as `uname -r` prints it (repeatable).")
@click.option("--rt-kernel", default="auto", show_default=True, help=_RT_HELP)
@click.option("--rebuild", is_flag=True, help="Build even if an up-to-date image exists.")
@click.option("--cache", default=None, metavar="REGISTRY/REPO",
              help="Take each toolkit from this registry repository if it is there (keyed "
                   "by its plan hash), and store it there once made, for every machine.")
@registry_auth_options("for the --cache registry")
@sources_option
@json_option
def build_cmd(*, kernels: tuple[str, ...], rt_kernel: str, rebuild: bool, cache: str | None,
              tls_verify: bool | None, authfile: Path | None, sources: Path | None,
              as_json: bool) -> None:
    """Build (or reuse) the toolkit image for each kernel."""
    mon = monitor(as_json)
    shared = RegistryCache(check_repo(cache), mon.step, tls_verify, authfile,
                           progress=mon.step, detail=mon.detail) if cache else None
    distro = open_archive(sources)
    catalog = distro.kernels()
    for release in kernels:  # check all first: fail before any work
        find_kernel(catalog, release)
    built = [_ensure(r, rt_kernel, distro, mon, rebuild=rebuild, cache=shared) for r in kernels]
    if as_json:
        print_json([{"name": t.name, "image_id": t.image_id, "kernel": t.kernel,
                     "rt_kernel": t.rt_kernel} for t in built])
        return
    print_table(["IMAGE", "KERNEL", "RT KERNEL", "ID"],
                [[t.name, t.kernel, t.rt_kernel or "-", t.image_id[:12]] for t in built])


def _ensure(release: str, rt_kernel: str, distro: DebianArchive, mon: Monitor, *,
            rebuild: bool, cache: RegistryCache | None) -> ToolkitImage:
    plan = tplan.plan_toolkit(distro, release, rt_kernel)
    if cache and not rebuild and not is_current(plan):
        cache.take_input(plan.tag, *toolkit_entry(plan))
    toolkit = ensure_toolkit(release, rt_kernel, distro=distro, monitor=mon, rebuild=rebuild)
    if cache:
        cache.store_input(plan.tag, *toolkit_entry(plan))
    return toolkit


@toolkit.command("containerfile")
@click.option("--kernel", required=True, metavar="RELEASE", help="Kernel release.")
@click.option("--rt-kernel", default="auto", show_default=True, help=_RT_HELP)
@sources_option
def containerfile_cmd(kernel: str, rt_kernel: str, sources: Path | None) -> None:
    """Print the Containerfiles dtk builds the toolkit from (base, tools, kernel)."""
    plan = tplan.plan_toolkit(open_archive(sources), kernel, rt_kernel)
    for title, text in (("base: " + plan.base_tag, tplan.base_containerfile(plan)),
                        ("tools: " + plan.tools_tag, tplan.tools_containerfile(plan)),
                        ("toolkit: " + plan.tag, tplan.kernel_containerfile(plan))):
        click.echo(f"# ==== {title}\n{text}")  # data: the Containerfiles as they are


@toolkit.command("list")
@json_option
def list_cmd(as_json: bool) -> None:
    """List toolkit images in local storage."""
    rows = list_toolkits()
    if as_json:
        print_json(rows)
        return
    print_table(["IMAGE", "KERNEL", "RT KERNEL", "SIZE", "CREATED"],
                [[r["name"], r["kernel"], r["rt_kernel"] or "-", human_size(r["size"]),
                  r["created"][:19].replace("T", " ")]
                 for r in rows])


@toolkit.command("inspect")
@click.argument("image")
@json_option
def inspect_cmd(image: str, as_json: bool) -> None:
    """Show a toolkit's release file, labels, size and kernel packages.

    IMAGE is a toolkit image or a kernel release (its toolkit in local storage)."""
    if kern.try_parse(image) is not None and not buildah.image_exists(image):
        image = find_toolkit(image)[0]
    info = inspect_toolkit(image)
    if as_json:
        print_json(info.to_json())
        return
    say(f"{info.name}  ({info.image_id[:12]}, {human_size(info.size)}, "
               f"{len(info.layers)} layers, {len(info.packages)} packages)")
    for key, value in info.release.items():
        say(f"  {key:24} {value}")
    kernel_pkgs = [p for p in info.packages
                   if p[0].startswith(("linux-", "gcc-1")) or p[0] in ("dwarves", "kmod")]
    print_table(["PACKAGE", "VERSION", "ARCH"], kernel_pkgs)


@toolkit.command("push")
@click.argument("image")
@click.argument("dest")
@registry_auth_options("for pushing")
def push_cmd(image: str, dest: str, tls_verify: bool | None, authfile: Path | None) -> None:
    """Push a toolkit image to a registry (DEST like registry:5000/ns/driver-toolkit:TAG)."""
    buildah.inspect(image)  # a clear error if it does not exist
    digest = skopeo.push(image, dest, tls_verify=tls_verify, authfile=authfile,
                         on_retry=stderr)
    say(f"pushed {image} to {dest} ({digest})")


@toolkit.command("rm")
@click.argument("images", nargs=-1, required=True)
def rm_cmd(images: tuple[str, ...]) -> None:
    """Remove toolkit images."""
    for image in images:
        inspect_toolkit(image)
        buildah.remove_image(image)
        say(f"removed {image}")


@toolkit.command("prune")
@sources_option
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@json_option
def prune_cmd(sources: Path | None, dry_run: bool, as_json: bool) -> None:
    """Remove toolkits whose kernel left the archive, superseded base and tools layers,
    and untagged toolkit images. Only images dtk's records say it made are touched (not
    images built FROM a toolkit), and an archive that lists no kernel prunes nothing."""
    archive = open_archive(sources)
    kernels = archive.kernels()
    current: set[str] = set()
    if kernels:
        plan = tplan.plan_toolkit(archive, kernels[0].release, "none")
        current = {plan.base_tag, plan.tools_tag}
    removals = plan_prune({e.release for e in kernels}, current)
    if not dry_run:
        prune(removals)
    if as_json:
        print_json({"dry_run": dry_run, "removed": [r.to_json() for r in removals]})
        return
    if not removals:
        say("nothing to prune")
        return
    print_table(["IMAGE", "NAMES", "SIZE", "WHY"],
                [[r.image_id[:12], ", ".join(r.names) or "<none>", human_size(r.size), r.why]
                 for r in removals])
    say(("would remove" if dry_run else "removed") + f" {len(removals)} image(s)")


def register(group: click.Group) -> None:
    group.add_command(toolkit)



