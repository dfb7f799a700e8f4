"""`dtk kernels`: the kernel catalog of the configured archive."""

from __future__ import annotations

from pathlib import Path

import click

from dtk.cli.common import json_option, print_json, print_table, sources_option
from dtk.distro.query import select
from dtk.distro.select import open_archive
from dtk.errors import DtkError
from dtk.kernel import Flavour


@click.command("kernels")
@click.option("--flavour", type=click.Choice([f.value for f in Flavour]), default=None,
              help="Only this flavour (standard, rt, cloud, …).")
@click.option("--line", default=None, metavar="X.Y", help="Only this kernel line, e.g. 6.12.")
@click.option("--latest", is_flag=True, help="Only the newest release of each line and flavour.")
@sources_option
@json_option
def kernels_cmd(flavour: str | None, line: str | None, latest: bool, sources: Path | None,
                as_json: bool) -> None:
    """List kernel releases available in the archive, as `uname -r` prints them."""
    entries = select(open_archive(sources).kernels(), flavour, line, latest)
    if as_json:
        print_json([e.to_json() for e in entries])
        return
    if not entries:
        raise DtkError("no kernel matches these filters", hint="try without --flavour/--line")
    print_table(
        ["RELEASE", "FLAVOUR", "PACKAGE VERSION", "SOURCE", "METAPACKAGES"],
        [[e.release, e.flavour, e.version, f"{e.source} {e.source_version}",
          ", ".join(e.metapackages) or "-"] for e in entries],
    )


def register(group: click.Group) -> None:
    group.add_command(kernels_cmd)
