"""The README's command reference and the commands' real options agree, both ways.

For every command, the README's usage lines (in code blocks, starting with
`dtk <command>` and continued by indented lines) must name every option the
command takes, and every option they name must exist. `--help`, `-h` and the
group-level `-v` are left out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from dtk.cli.main import full_cli

FULL = full_cli()

README = Path(__file__).resolve().parents[2] / "README.md"
_FLAG = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*|-[a-zA-Z](?![\w-]))")


def commands(group: click.Group = FULL, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
            if not command.invoke_without_command:
                continue
        yield (*path, name), command


def usage_lines(text: str) -> dict[tuple[str, ...], str]:
    """Usage text per command path, from the README's fenced code blocks."""
    blocks = re.findall(r"```(?:sh|console)?\n(.*?)```", text, re.S)
    found: dict[tuple[str, ...], str] = {}
    for block in blocks:
        current: tuple[str, ...] | None = None
        for line in block.splitlines():
            words = line.split("#", 1)[0].split()
            if words[:1] == ["dtk"]:
                names = tuple(w for w in words[1:3] if re.fullmatch(r"[a-z][a-z-]*", w))
                current = _longest_known(names)
                if current is not None:
                    found[current] = found.get(current, "") + " " + line.split("#", 1)[0]
            elif current is not None and line.startswith((" ", "\t")) and line.strip():
                found[current] += " " + line.split("#", 1)[0]
            else:
                current = None
    return found


KNOWN = {path for path, _ in commands()}


def _longest_known(words: tuple[str, ...]) -> tuple[str, ...] | None:
    for n in range(len(words), 0, -1):
        if words[:n] in KNOWN:
            return words[:n]
    return None


def options(command: click.Command) -> list[frozenset[str]]:
    """Each option's spellings (`-f`/`--file`, `--tls-verify`/`--no-tls-verify`)."""
    return [frozenset((*p.opts, *p.secondary_opts)) for p in command.params
            if isinstance(p, click.Option) and "--help" not in p.opts]


USAGE = usage_lines(README.read_text())
CASES = sorted(commands())


@pytest.mark.parametrize(("path", "command"), CASES, ids=[" ".join(p) for p, _ in CASES])
def test_readme_documents_exactly_the_commands_options(path: tuple[str, ...],
                                                       command: click.Command) -> None:
    assert path in USAGE, f"the README has no usage line for dtk {' '.join(path)}"
    documented = set(_FLAG.findall(USAGE[path]))
    real = options(command)
    missing = sorted(max(s, key=len) for s in real if not s & documented)
    assert missing == [], "options missing from the README"
    spelled = set().union(*real) if real else set()
    extra = sorted(f for f in documented - spelled if f.startswith("--"))
    assert extra == [], "the README names options that do not exist"
