"""Entry point: the `dtk` group, logging, and one-screen errors."""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import time
import traceback

import click

from dtk import __version__, paths, textfit
from dtk.distro import aptindex
from dtk.errors import DtkError, ProblemsError

# Each command's modules (under dtk.cli), imported when the command runs: importing
# every workflow (VMs, proving, KMM, nodes) costs 0.1 s at each start of any command.
# `module`'s subcommands are in two modules (module_run adds to module's group).
_KMOD = ("kmod",)
COMMANDS = {"build": ("driver",), "kernels": ("kernels",), "toolkit": ("toolkit",),
            "check": _KMOD, "inspect": _KMOD, "keygen": _KMOD, "sign": _KMOD,
            "verify": _KMOD, "vmtest": ("vm",), "demo": ("demo",), "prove": ("prove",),
            "module": ("module", "module_run"), "node": ("node",), "report": ("report",),
            "render": ("render",)}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            found = click.Group()
            for name in COMMANDS[cmd_name]:
                importlib.import_module(f"dtk.cli.{name}").register(found)
            self.add_command(found.commands[cmd_name])
        return self.commands.get(cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dtk")
@click.option("-v", "--verbose", count=True, help="Log every command dtk runs (-vv: debug).")
@click.option("--offline", is_flag=True,
              help="Never touch the network for package indexes and packages: use the "
                   "index this machine has (as DTK_OFFLINE=1 does). The index is refreshed "
                   "otherwise when older than DTK_INDEX_MAX_AGE minutes (default 15).")
def cli(verbose: int, offline: bool) -> None:
    """dtk: out-of-tree kernel drivers for whatever kernel a machine runs."""
    if offline:  # one switch for every floor, threads included: the variable
        os.environ[aptindex.OFFLINE_ENV] = "1"
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(name)s: %(message)s")
    if verbose:
        logging.getLogger("dtk.run").setLevel(logging.DEBUG)



def full_cli() -> click.Group:
    """`cli` with every command imported (for what walks them all: docs, their tests)."""
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        cli.get_command(ctx, name)
    return cli


def _exit_on_signal(signum: int, _frame: object) -> None:
    # Unwinding (rather than dying) lets dtk.run kill the child's process group
    # and every context manager remove its working container, mount or VM.
    del signum
    raise KeyboardInterrupt


def _wants_json(argv: list[str]) -> bool:
    return "--json" in argv


def _error_json(message: str, hint: str | None, kind: str,
                problems: list[dict[str, object]] | None = None) -> str:
    error: dict[str, object] = {"kind": kind, "message": message, "hint": hint}
    if problems is not None:
        error["problems"] = problems
    return json.dumps({"error": error}, indent=2)


def _report_bug(exc: BaseException, argv: list[str]) -> str:
    """One screen for an exception dtk did not expect: it is a bug, and says where
    the traceback went (a file, not the terminal) and how to learn more."""
    crash_dir = paths.state_dir() / "crashes"
    crash_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    log = crash_dir / f"{stamp}-{os.getpid()}.log"
    log.write_text("dtk " + " ".join(argv) + "\n\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return (f"error: dtk hit a bug: {type(exc).__name__}: {exc}\n"
            f"hint: this is dtk's fault, not yours; the traceback is in {log}. Rerun with "
            "-v to see every command dtk runs, and report it with that file.")


def run_cli(argv: list[str]) -> int:
    """Run the command line; return the exit status. Errors never show a traceback:
    a user's mistake gets one screen with the fix (exit 2), a bug one screen saying so."""
    try:
        cli.main(argv, prog_name="dtk", standalone_mode=False)
    except BaseException as exc:
        return _exit_status(exc, argv)
    return 0


def _exit_status(exc: BaseException, argv: list[str]) -> int:
    as_json = _wants_json(argv)
    if isinstance(exc, DtkError):
        problems = exc.problems if isinstance(exc, ProblemsError) else None
        if as_json:
            click.echo(_error_json(exc.message, exc.hint, "input", problems))
        else:
            _say_error(exc.render())
        return 2
    if isinstance(exc, click.exceptions.Exit):
        return exc.exit_code
    if isinstance(exc, click.ClickException):
        if as_json:
            click.echo(_error_json(exc.format_message(), None, "usage"))
        else:
            exc.show()
        return exc.exit_code
    if isinstance(exc, (KeyboardInterrupt, click.exceptions.Abort)):
        click.echo("interrupted", err=True)
        return 130
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    if not isinstance(exc, Exception):
        raise exc  # GeneratorExit and the like are not errors to report
    text = _report_bug(exc, argv)
    if as_json:
        click.echo(_error_json(text, None, "bug"))
    else:
        _say_error(text)
    return 70  # EX_SOFTWARE: an internal error


def _say_error(text: str) -> None:
    """An error screen on stderr, every line fitted to the terminal."""
    for line in textfit.wrap(text):
        click.echo(line, err=True)


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(run_cli(sys.argv[1:]))
