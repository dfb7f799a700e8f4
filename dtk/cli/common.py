"""Options and output helpers shared by the CLI's command modules."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from dtk.progress import JsonMonitor, Monitor, TextMonitor

F = TypeVar("F", bound=Callable[..., Any])


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print machine-readable JSON on stdout.")(func)


def sources_option(func: F) -> F:
    return click.option(
        "--sources", type=click.Path(path_type=Path, dir_okay=False), default=None,
        help="APT sources file (one-line or deb822) instead of the machine's own "
             "configuration, e.g. for a mirror or an air-gapped repository.")(func)


def monitor(as_json: bool) -> Monitor:
    return JsonMonitor() if as_json else TextMonitor()


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned table; wide columns are not truncated (they are names)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def stderr(text: str) -> None:
    print(text, file=sys.stderr)


def registry_options(func: F) -> F:
    """For images that live only in a registry: pulled into local storage first."""
    return registry_auth_options("for pulling an image that is not in local storage")(func)


TLS_HELP = ("Verify the registry's TLS certificate (default: yes, except for a loopback "
            "registry: 127.0.0.0/8, ::1, localhost).")


def registry_auth_options(purpose: str) -> Callable[[F], F]:
    """--authfile and --tls-verify/--no-tls-verify, the same on every command that talks
    to a registry (unset TLS: dtk.engine.registry's one rule)."""
    def decorate(func: F) -> F:
        func = click.option("--authfile", type=click.Path(path_type=Path, dir_okay=False,
                                                          exists=True), default=None,
                            help="Registry credentials (containers-auth.json / docker "
                                 f"config) {purpose}.")(func)
        return click.option("--tls-verify/--no-tls-verify", "tls_verify", default=None,
                            help=TLS_HELP)(func)
    return decorate
