"""`dtk report merge`: the JSON of N shards (`--shard I/N`) as one result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from dtk.cli.common import json_option, print_json, stderr
from dtk.cli.driver import print_outcomes
from dtk.cli.module_run import report_results
from dtk.cli.prove import show_proof
from dtk.driver.merge import merge_builds, outcome_from_json
from dtk.driver.outcome import Status
from dtk.errors import DtkError
from dtk.kmm.build import KernelResult
from dtk.kmm.merge import merge_module_builds
from dtk.prove.merge import merge_proofs


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
@click.option("--html", "html_file", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="For dtk prove's shards: also write the merged matrix as "
                                 "one HTML page.")
@json_option
def merge_cmd(files: tuple[Path, ...], html_file: Path | None, as_json: bool) -> None:
    """Merge the `--json` outputs of every shard of one `dtk build`, `dtk module build`
    or `dtk prove` into what one machine running the whole matrix prints."""
    inputs = [_read(f) for f in files]
    names = [str(f) for f in files]
    if all("rows" in d for d in inputs):
        _merge_proofs(inputs, names, html_file, as_json)
        return
    if html_file:
        raise DtkError("--html is for the shards of dtk prove")
    if all("results" in d for d in inputs):
        _merge_module_builds(inputs, names, as_json)
        return
    merged = merge_builds(inputs, names)
    outcomes = [outcome_from_json(o) for o in merged["outcomes"]]
    if as_json:
        print_json(merged)
    else:
        print_outcomes(outcomes, ", ".join(merged["log_dirs"]), merged["wall_seconds"])
    if any(o.status is Status.FAILED for o in outcomes):
        raise SystemExit(1)


def _merge_module_builds(inputs: list[dict[str, Any]], names: list[str], as_json: bool) -> None:
    merged = merge_module_builds(inputs, names)
    results = [KernelResult.from_json(r) for r in merged["results"]]
    if as_json:
        print_json(merged)
    else:
        report_results(results, merged["wall_seconds"])
        for kernel in merged["unmatched"]:
            stderr(f"note: no mapping matches {kernel}; KMM loads nothing there")
    if any(r.failed for r in results):
        raise SystemExit(1)


def _merge_proofs(inputs: list[dict[str, Any]], names: list[str], html_file: Path | None,
                  as_json: bool) -> None:
    result, cells = merge_proofs(inputs, names)
    show_proof(result, {"cells": cells, "shard": "1/1"}, html_file, as_json)


def register(group: click.Group) -> None:
    group.add_command(report_group)
