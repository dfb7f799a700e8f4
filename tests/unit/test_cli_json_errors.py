"""`dtk module validate --json` gives each problem as a record a script can use:
{file, document, item, path, message} (issue 17 §4), for the schema's errors and
for the admission webhook's alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.kmm_support import container, dtk, minimal, write


def _problems(monkeypatch: pytest.MonkeyPatch, path: Path) -> list[dict[str, object]]:
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(path), "--json")
    assert code == 2, text
    error = json.loads(text)["error"]
    assert error["kind"] == "input"
    problems: list[dict[str, object]] = error["problems"]
    return problems


def test_schema_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    doc["spec"]["bogus"] = 1
    path = write(tmp_path, minimal(), doc)
    problems = _problems(monkeypatch, path)
    assert {"file": str(path), "document": 2, "item": None, "path": "spec.bogus",
            "message": "unknown field", "rule": "schema"} in problems


def test_webhook_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    mapping = container(doc)["kernelMappings"][1]
    mapping["regexp"] = "("  # not a valid RE2 pattern: the webhook's rule, not the schema's
    path = write(tmp_path, doc)
    problems = _problems(monkeypatch, path)
    assert [(p["file"], p["document"], p["path"]) for p in problems] == \
        [(str(path), 1, "spec.moduleLoader.container.kernelMappings[1].regexp")]
    assert isinstance(problems[0]["message"], str) and problems[0]["message"]
