"""Shared helpers for the dtk.kmm tests: real manifests on disk and the real CLI entry point."""

from __future__ import annotations

import copy
import signal
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from dtk.cli.main import main

DATA = Path(__file__).resolve().parent.parent / "data" / "kmm"
MANIFESTS = DATA / "manifests"
NODES = DATA / "cluster" / "nodes.json"

_MINIMAL: dict[str, Any] = {
    "apiVersion": "kmm.sigs.x-k8s.io/v1beta1",
    "kind": "Module",
    "metadata": {"name": "hello", "namespace": "default"},
    "spec": {
        "moduleLoader": {"container": {
            "modprobe": {"moduleName": "hello"},
            "kernelMappings": [
                {"literal": "6.1.0-56-amd64",
                 "containerImage": "registry.example.com/hello:${KERNEL_FULL_VERSION}"},
                {"regexp": "^6\\.12\\.",
                 "containerImage": "registry.example.com/hello:${KERNEL_FULL_VERSION}"},
            ],
        }},
        "selector": {"kubernetes.io/os": "linux"},
    },
}


def minimal() -> dict[str, Any]:
    """A small Module KMM admits, to break one rule at a time."""
    return copy.deepcopy(_MINIMAL)


def container(doc: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = doc["spec"]["moduleLoader"]["container"]
    return result


def write(tmp_path: Path, *docs: dict[str, Any], name: str = "module.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
    return path


def dtk(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """Run `dtk ARGS` through the real entry point (its exit codes and error screen)."""
    monkeypatch.setattr(signal, "signal", lambda *_: None)
    monkeypatch.setattr(sys, "argv", ["dtk", *args])
    runner = CliRunner()
    with runner.isolation() as (out, err, _both):
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        text = out.getvalue().decode() + err.getvalue().decode()
    return code, text


def rejected(monkeypatch: pytest.MonkeyPatch, path: Path, *args: str) -> str:
    """`dtk module validate -f PATH`, which must fail as a user error; its output."""
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(path), *args)
    assert code == 2, text
    assert "Traceback" not in text
    assert text.startswith("error: ")
    assert len(text.splitlines()) < 50  # one screen
    return text
