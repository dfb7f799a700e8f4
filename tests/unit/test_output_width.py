"""Every line dtk prints for a person fits $COLUMNS (issue 28 §10; 120 off a tty):
many commands, each fed names, paths and reasons long enough to overflow, every line
of stdout and stderr measured. Commands that need toolkits, a registry or a VM are
measured in tests/integration/test_build_tour.py."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest

from dtk.cli.driver import _print_plan, print_outcomes
from dtk.cli.main import full_cli
from dtk.driver.outcome import Outcome, Status
from dtk.kmm.build import KernelResult
from dtk.progress import TextMonitor
from tests.unit.kmm_support import container, dtk, minimal, write

LONG = "registry.example.com/" + "a-rather-long-project-name/" * 3
KERNELS = ["6.12.118+deb12-amd64", "6.12.118+deb12-rt-amd64", "6.1.0-56-amd64"]


def _check(text: str, columns: int) -> None:
    wide = [line for line in text.splitlines() if len(line) > columns]
    assert wide == [], f"{len(wide)} line(s) wider than {columns}"


def _help_paths(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _help_paths(command, (*path, name))


def _outcomes() -> list[Outcome]:
    out = [Outcome("acpi-call", k, Status.BUILT, f"{LONG}acpi-call:{k.replace('+', '_')}",
                   modules=("acpi_call=1.2.2",), seconds=12.0) for k in KERNELS]
    out.append(Outcome("librem-ec-acpi", KERNELS[0], Status.FAILED, f"{LONG}librem:x",
                       reason="dkms build failed: " + "error: implicit declaration of "
                       "function 'acpi_bus_register_driver' " * 3,
                       tail=("/var/lib/dkms/librem-ec-acpi/0.9.2/build/librem_ec_acpi.c:123:"
                             "5: " + "error: 'struct acpi_device' has no member " * 4,),
                       log="/root/.local/state/dtk/build/" + "x" * 90 + "/librem.log",
                       notes=("librem-ec-acpi: BUILD_DEPENDS names " + "y" * 120,)))
    return out


def _shard_files(tmp_path: Path) -> list[str]:
    outcomes = _outcomes()
    cells = [f"{o.module}@{o.kernel}" for o in outcomes]
    files = []
    for index, part in ((1, outcomes[:2]), (2, outcomes[2:])):
        path = tmp_path / f"shard-{index}.json"
        path.write_text(json.dumps({"outcomes": [o.to_json() for o in part],
                                    "log_dir": "/root/.local/state/dtk/build/" + "z" * 80,
                                    "wall_seconds": 30.0,
                                    "matrix": {"cells": cells, "shard": f"{index}/2"}}))
        files.append(str(path))
    return files


def _module_files(tmp_path: Path) -> list[str]:
    files = []
    for index, kernel in enumerate(KERNELS[:2], start=1):
        result = KernelResult(kernel, f"{LONG}kmm-ci:{kernel.replace('+', '_')}", "built",
                              pushed="sha256:" + "f" * 64, seconds=31.0)
        path = tmp_path / f"module-{index}.json"
        path.write_text(json.dumps({
            "module": "kmm-ci", "namespace": "default", "results": [result.to_json()],
            "unmatched": [], "log_dir": "/l", "wall_seconds": 31.0,
            "matrix": {"cells": KERNELS[:2], "shard": f"{index}/2"}}))
        files.append(str(path))
    return files


def _commands(tmp_path: Path) -> Iterator[list[str]]:
    for path in _help_paths(full_cli()):
        yield [*path, "--help"]
    doc = minimal()
    for mapping in container(doc)["kernelMappings"]:
        mapping["containerImage"] = LONG + "hello:${KERNEL_FULL_VERSION}"
    module = str(write(tmp_path, doc))
    yield ["module", "validate", "-f", module]
    yield ["module", "plan", "-f", module, *(a for k in KERNELS for a in ("--kernel", k)),
           "--no-state"]
    yield ["report", "merge", *_shard_files(tmp_path)]
    yield ["report", "merge", *_module_files(tmp_path)]
    yield ["report", "merge", str(tmp_path / ("no-such-file-" + "q" * 120 + ".json"))]
    render = ["render", "job", "--shards", "8", "--dtk-image", LONG + "dtk:latest", "--cache",
              LONG + "dtk-cache", "-o", str(tmp_path / ("out-" + "o" * 100))]
    yield [*render, "--", "--dkms", "acpi-call-dkms", "--kernels", "6.1,latest"]
    yield [*render, "--", "--dkms", "./mydriver", "--kernels", "6.1"]
    yield [*render, "--", "--dkms", "x", "--image", LONG + "${MOD_NAME}:${KERNEL_FULL_VERSION",
           "--kernel", KERNELS[0]]
    yield ["build", "--dkms", "acpi-call-dkms", "--kernel", "6.12.118_deb12-amd64"]
    yield ["build", "--dkms", "x", "--kernel", KERNELS[0], "--push"]


@pytest.mark.parametrize("columns", [120, 80])
def test_every_line_of_many_commands_fits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          columns: int) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    ran = 0
    for argv in _commands(tmp_path):
        _code, text = dtk(monkeypatch, *argv)
        try:
            _check(text, columns)
        except AssertionError as exc:
            raise AssertionError(f"dtk {' '.join(argv)[:150]}: {exc}\n{text}") from None
        ran += 1
    assert ran > 35  # every command's help, and the commands above


@pytest.mark.parametrize("columns", [120, 80])
def test_the_builds_own_printers_fit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str], columns: int) -> None:
    """The table and summary of a build (also `dtk report merge`'s), the --plan summary
    of 201 shards (the tour's 640-column line), and the progress lines on stderr."""
    monkeypatch.setenv("COLUMNS", str(columns))
    print_outcomes(_outcomes(), tmp_path, 31.0)
    plan: dict[str, Any] = {"shards": 201, "loads": [1 << 20] * 201, "cells": []}
    _print_plan(plan, as_json=False)
    stream = io.StringIO()
    mon = TextMonitor(stream)
    mon.step(f"warning: cache {LONG}dtk-cache: looking up {LONG}dtk-cache:" + "0" * 64
             + " failed: the registry refused the credentials (unauthorized); building "
             "locally\nhint: pass its credentials: --authfile FILE")
    captured = capsys.readouterr()
    for text in (captured.out, captured.err, stream.getvalue()):
        _check(text, columns)
    assert "images:" in captured.out
