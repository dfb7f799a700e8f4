"""Options and output helpers shared by the CLI's command modules."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from dtk import textfit
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


class TaggedTally:
    """A Monitor that passes everything on and remembers the images finished cells
    tagged: what an interrupted build says it leaves behind."""

    def __init__(self, inner: Monitor) -> None:
        self.inner = inner
        self.tagged: list[str] = []

    def step(self, message: str) -> None:
        self.inner.step(message)

    def detail(self, line: str) -> None:
        self.inner.detail(line)

    def event(self, kind: str, **data: Any) -> None:
        if kind == "cell" and data.get("status") == "built" and data.get("image"):
            self.tagged.append(str(data["image"]))
        self.inner.event(kind, **data)


@contextmanager
def interrupt_summary(tally: TaggedTally) -> Iterator[None]:
    """On Ctrl-C (or SIGTERM), say which images are tagged before exiting 130."""
    try:
        yield
    except KeyboardInterrupt:
        images = list(dict.fromkeys(tally.tagged))
        click.echo(f"\ninterrupted: {len(images)} image(s) tagged before the interrupt"
                   + "".join(f"\n  {image}" for image in images), err=True)
        raise


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


_NARROWEST = 8  # a column is not cut below this (or its header)


def table_width() -> int:
    """The terminal's width: $COLUMNS, else the terminal's own, else 120 (a pipe or
    a file has no width; 120 keeps a log readable)."""
    return textfit.width()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """An aligned table that fits the terminal: the widest columns give way first, a
    cell cut short has '…' where its middle was, and what tells a column's rows apart
    is kept whole where it fits (--json has every value in full)."""
    body = [[str(c) for c in row] for row in rows]
    heads = [str(h) for h in headers]
    widths = fit([max(len(x) for x in [h, *(r[i] for r in body)]) for i, h in enumerate(heads)],
                 [len(h) for h in heads], table_width())
    columns = [textfit.fit_column([r[i] for r in body], w) for i, w in enumerate(widths)]
    lines = [heads, ["-" * w for w in widths], *map(list, zip(*columns, strict=True))]
    for row in lines:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def fit(widths: list[int], floors: list[int], limit: int) -> list[int]:
    """Column widths whose sum with 2-space gaps is at most `limit`, taking from the
    widest column one character at a time (as far as each column's floor allows)."""
    out = list(widths)
    gaps = 2 * (len(out) - 1)
    while sum(out) + gaps > limit:
        wide = max(range(len(out)), key=lambda i: out[i] - max(floors[i], _NARROWEST))
        if out[wide] <= max(floors[wide], _NARROWEST):
            break  # nothing left to take: wider than the terminal, but whole
        out[wide] -= 1
    return out


def say(text: str = "", *, err: bool = False, indent: str = "    ") -> None:
    """Human text, every line wrapped to the terminal (a wrapped line's continuation
    indented); not for data (YAML, a Containerfile), which is printed as it is."""
    for line in textfit.wrap(text, indent=indent):
        click.echo(line, err=err)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def stderr(text: str) -> None:
    say(text, err=True)


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
