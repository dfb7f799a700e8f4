"""`dtk kernels`: the kernel catalog of the configured archive."""

from __future__ import annotations

import re
from pathlib import Path

import click

from dtk.cli.common import json_option, print_json, print_table, sources_option
from dtk.distro.query import select
from dtk.distro.select import open_archive
from dtk.errors import DtkError
from dtk.kernel import Flavour


def _line_key(line: str) -> tuple[int, ...]:
    return tuple(int(n) for n in line.split("."))


def _check_line(value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"\d+\.\d+", value):
        raise click.BadParameter(f"'{value}' is not a kernel line X.Y (e.g. 6.1 or 6.12)")
    return value


@click.command("kernels")
@click.option("--flavour", type=click.Choice([f.value for f in Flavour]), default=None,
              help="Only this flavour (standard, rt, cloud, …).")
@click.option("--line", default=None, metavar="X.Y", callback=lambda _c, _p, v: _check_line(v),
              help="Only this kernel line, e.g. 6.12.")
@click.option("--latest", is_flag=True, help="Only the newest release of each line and flavour.")
@sources_option
@json_option
def kernels_cmd(flavour: str | None, line: str | None, latest: bool, sources: Path | None,
                as_json: bool) -> None:
    """List kernel releases available in the archive, as `uname -r` prints them."""
    catalog = open_archive(sources).kernels()
    entries = select(catalog, flavour, line, latest)
    if not entries:
        lines = ", ".join(sorted({e.line for e in catalog}, key=_line_key)) or "none"
        raise DtkError("no kernel matches these filters",
                       hint=f"the archive has the kernel lines {lines}; flavours: "
                            + ", ".join(sorted({e.flavour for e in catalog})))
    if as_json:
        print_json([e.to_json() for e in entries])
        return
    print_table(
        ["RELEASE", "FLAVOUR", "PACKAGE VERSION", "SOURCE", "METAPACKAGES"],
        [[e.release, e.flavour, e.version, f"{e.source} {e.source_version}",
          ", ".join(e.metapackages) or "-"] for e in entries],
    )


def register(group: click.Group) -> None:
    group.add_command(kernels_cmd)
