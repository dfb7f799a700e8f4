"""`dtk prove`: which modules work on which kernels — built, predicted and proven."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from dtk.cli.buildplan import run_build
from dtk.cli.buildreq import BuildRequest, build_input_options, refuse_at_once, sources_of
from dtk.cli.common import json_option, monitor, print_json, registry_auth_options, say
from dtk.cli.secure import secure_boot_options, secure_boot_spec
from dtk.engine import buildah
from dtk.files import write_atomic
from dtk.prove.html import render_html
from dtk.prove.model import ProveCell, ProveResult
from dtk.prove.plan import cells_for_images, cells_from_outcomes
from dtk.prove.report import render_text
from dtk.prove.run import prove
from dtk.vm.qemu import ACCELS


def _image_id(image: str) -> str:
    return buildah.image_id(image) if buildah.image_exists(image) else ""


def use_colour() -> bool:
    return sys.stdout.isatty() and "NO_COLOR" not in os.environ


@click.command("prove")
@build_input_options
@click.option("--built-for", default="", metavar="K0",
              help="Without sources: load the image built for K0 on every kernel "
                   "(the upgrade question).")
@click.option("--module", "modules", multiple=True, metavar="NAME",
              help="Load only this module of each image (repeatable; default: all).")
@click.option("--check", "check_cmd", default="", metavar="CMD",
              help="Shell command run in the guest while each module is loaded.")
@click.option("--timeout", default=60.0, show_default=True,
              help="Seconds a boot may take before its modules' own steps.")
@click.option("--accel", type=click.Choice(ACCELS), default="auto", show_default=True,
              help="auto uses KVM only if a probe boot under KVM succeeds.")
@click.option("--no-cache", is_flag=True, help="Prove every cell again, even unchanged ones.")
@secure_boot_options
@click.option("--html", "html_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="Also write the matrix as one self-contained HTML page.")
@registry_auth_options("for the --cache registry and for pulling FROM images")
@json_option
def prove_cmd(*, built_for: str, modules: tuple[str, ...], check_cmd: str, timeout: float,
              accel: str, no_cache: bool, secure_boot: bool, enrol: Path | None,
              enrol_with: str, vars_path: Path | None, html_file: Path | None,
              as_json: bool, **values: Any) -> None:
    """Build (or take) every module for every kernel, check each statically, boot
    each kernel once loading all of them, and say where they work and why not.

    With -f/--dkms it builds first (cache hits make re-runs cheap); without,
    it proves the images --image names. Exit status 0 only if every cell is
    green and check and boot agree everywhere.
    """
    secure = secure_boot_spec(secure_boot=secure_boot, enrol=enrol, enrol_with=enrol_with,
                              vars_path=vars_path)
    request = BuildRequest(**values)
    refuse_at_once(request, needs_sources=False)
    mon = monitor(as_json)
    cells: list[ProveCell]
    matrix: dict[str, Any] | None = None
    if request.files or request.dkms:
        found = sources_of(request)
        archive, kernels = request.archive_and_kernels()
        run = run_build(request, found, archive, kernels, mon)
        cells = cells_from_outcomes(run.outcomes, modules=modules, check=check_cmd)
        matrix = run.matrix_json()
    else:
        _archive, kernels = request.archive_and_kernels()
        cells = cells_for_images(request.template, kernels, _image_id,
                                 mod_name=request.mod_name,
                                 mod_namespace=request.mod_namespace, built_for=built_for,
                                 modules=modules, check=check_cmd)
    result = prove(cells, mon, timeout_s=timeout, accel=accel, use_cache=not no_cache,
                   secure_boot=secure)
    show_proof(result, matrix, html_file, as_json)


def show_proof(result: ProveResult, matrix: dict[str, Any] | None, html_file: Path | None,
               as_json: bool) -> None:
    """A proof on the terminal or as JSON, and as a page; exit 1 unless all is well.
    `matrix`: what `dtk report merge` puts shards back together by."""
    data = result.to_json()
    if matrix is not None:
        data["matrix"] = matrix
    if html_file:
        write_atomic(html_file, render_html(data).encode())
        data["html"] = str(html_file)
    if as_json:
        print_json(data)
    else:
        click.echo(render_text(result, colour=use_colour()), nl=False)
        if html_file:
            say(f"page: {html_file}")
    if not result.ok:
        raise SystemExit(1)


def register(group: click.Group) -> None:
    group.add_command(prove_cmd)
