"""Entry point: the `dtk` group, logging, and one-screen errors."""

from __future__ import annotations

import logging
import signal
import sys

import click

from dtk import __version__
from dtk.cli import demo, driver, kernels, kmod, module_run, toolkit, vm
from dtk.cli import module as module_cli
from dtk.errors import DtkError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dtk")
@click.option("-v", "--verbose", count=True, help="Log every command dtk runs (-vv: debug).")
def cli(verbose: int) -> None:
    """dtk: out-of-tree kernel drivers for whatever kernel a machine runs."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(name)s: %(message)s")
    if verbose:
        logging.getLogger("dtk.run").setLevel(logging.DEBUG)


for command in (driver, kernels, toolkit, kmod, vm, demo, module_cli, module_run):
    command.register(cli)


def _exit_on_signal(signum: int, _frame: object) -> None:
    # Unwinding (rather than dying) lets dtk.run kill the child's process group
    # and every context manager remove its working container, mount or VM.
    del signum
    raise KeyboardInterrupt


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cli(standalone_mode=False)
    except DtkError as exc:
        click.echo(exc.render(), err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
