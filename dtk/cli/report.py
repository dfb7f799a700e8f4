"""`dtk report merge`: the JSON of N shards (`--shard I/N`) as one result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from dtk.cli.common import json_option, print_json
from dtk.cli.driver import print_outcomes
from dtk.driver.merge import merge_builds, outcome_from_json
from dtk.errors import DtkError


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise DtkError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise DtkError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise DtkError(f"{path} is not the --json output of dtk build or dtk prove")
    return data


@click.group("report")
def report_group() -> None:
    """Results of several runs, as one."""


@report_group.command("merge")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=False))
@json_option
def merge_cmd(files: tuple[Path, ...], as_json: bool) -> None:
    """Merge the `--json` outputs of every shard of one `dtk build` into what one
    machine running the whole matrix prints."""
    merged = merge_builds([_read(f) for f in files])
    outcomes = [outcome_from_json(o) for o in merged["outcomes"]]
    if as_json:
        print_json(merged)
    else:
        print_outcomes(outcomes, ", ".join(merged["log_dirs"]), merged["wall_seconds"])
    if any(o.status.value == "failed" for o in outcomes):
        raise SystemExit(1)


def register(group: click.Group) -> None:
    group.add_command(report_group)
