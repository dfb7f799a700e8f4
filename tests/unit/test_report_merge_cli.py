"""`dtk report merge` on the command line (issue 28 §9 and the tour): an input is
named by its file, and `dtk module build --shard` outputs merge like `dtk build`'s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dtk.cli.main import run_cli
from dtk.driver.outcome import Outcome, Status
from dtk.kmm.build import KernelResult

K1, K2, K3 = "6.1.0-56-amd64", "6.1.0-56-rt-amd64", "6.12.57+deb12-amd64"


def _write(path: Path, data: dict[str, Any]) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def _module_shard(shard: str, kernels: list[str], action: str = "built") -> dict[str, Any]:
    results = [KernelResult(k, f"r.example/hello:{k.replace('+', '_')}", action,
                            reason="compile error" if action == "failed" else "",
                            seconds=2.0).to_json() for k in kernels]
    return {"module": "hello", "namespace": "default", "results": results, "unmatched": [],
            "log_dir": f"/logs/{shard}", "wall_seconds": 4.0,
            "matrix": {"cells": [K1, K2, K3], "shard": shard}}


def test_module_build_shards_merge(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [_write(tmp_path / "s2.json", _module_shard("2/2", [K2])),
             _write(tmp_path / "s1.json", _module_shard("1/2", [K1, K3]))]
    assert run_cli(["report", "merge", *files, "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert [r["kernel"] for r in merged["results"]] == [K1, K2, K3]
    assert merged["matrix"] == {"cells": [K1, K2, K3], "shard": "1/1"}
    assert run_cli(["report", "merge", *files]) == 0
    table = capsys.readouterr().out
    assert "3 made, 0 existed, 0 failed" in table
    failing = _write(tmp_path / "s2f.json", _module_shard("2/2", [K2], "failed"))
    assert run_cli(["report", "merge", files[1], failing]) == 1  # the merge decides
    assert f"{K2} failed: compile error" in capsys.readouterr().err


def test_an_input_is_named_by_its_file(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    good = _write(tmp_path / "shard-1.json", {
        "outcomes": [Outcome("a", K1, Status.BUILT, "r/a:1").to_json()],
        "matrix": {"cells": [f"a@{K1}", f"a@{K2}"], "shard": "1/2"}})
    alien = _write(tmp_path / "shard-2.json", {"outcomes": []})
    assert run_cli(["report", "merge", good, alien]) == 2
    err = " ".join(capsys.readouterr().err.split())  # as wrapped to the terminal
    assert f"{alien} does not say which matrix it ran" in err and "input 2" not in err
    twice = _write(tmp_path / "again.json", {
        "outcomes": [Outcome("a", K1, Status.BUILT, "r/a:1").to_json()],
        "matrix": {"cells": [f"a@{K1}", f"a@{K2}"], "shard": "2/2"}})
    assert run_cli(["report", "merge", good, twice]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"a@{K1} is reported by two inputs: {good} and {twice}" in err
