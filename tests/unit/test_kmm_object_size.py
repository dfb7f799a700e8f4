"""ConfigMaps and Secrets are refused by size exactly as the API server refuses them
(pkg/apis/core/validation): `ValidateConfigMap` sums len(value) over `data` and the
decoded `binaryData` and refuses more than 1 MiB (core.MaxSecretSize); a key in both
`data` and `binaryData` is refused; `ValidateSecret` sums len(value) over `data` only
(the keys do not count). One byte under, at and over the limit, from both sides."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.unit.kmm_support import dtk, minimal, rejected, write

LIMIT = 1 << 20
DOCKERFILE = "FROM x\n"


def _module() -> dict[str, Any]:
    doc = minimal()
    mapping = doc["spec"]["moduleLoader"]["container"]["kernelMappings"][0]
    mapping["build"] = {"dockerfileConfigMap": {"name": "build"}}
    return doc


def _configmap(data: dict[str, str], binary: dict[str, bytes] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap",
                           "metadata": {"name": "build", "namespace": "default"},
                           "data": data}
    if binary is not None:
        doc["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
    return doc


def _secret(data: dict[str, bytes]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "extra", "namespace": "default"},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}


def _valid(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(path))
    assert code == 0, text


@pytest.mark.parametrize("extra", [-1, 0])
def test_a_configmap_up_to_one_mib_is_admitted(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, extra: int) -> None:
    # The key names do not count: only the values, in bytes (UTF-8 for data).
    filler = "é" * ((LIMIT - len(DOCKERFILE) - 2 + extra) // 2)
    size = len(DOCKERFILE) + len(filler.encode()) + 2
    assert size in (LIMIT - 1, LIMIT)
    doc = _configmap({"dockerfile": DOCKERFILE, "notes": filler}, {"blob": b"\0\1"})
    _valid(monkeypatch, write(tmp_path, _module(), doc))


def test_a_configmap_over_one_mib_is_refused(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    # 1 MiB + 1 in total, split between data (UTF-8 bytes, not characters) and the
    # decoded binaryData (not its base64, which is a third longer).
    filler = "é" * ((LIMIT - len(DOCKERFILE)) // 2 - 100)
    binary = b"\xff" * (LIMIT + 1 - len(DOCKERFILE) - len(filler.encode()))
    doc = _configmap({"dockerfile": DOCKERFILE, "notes": filler}, {"blob": binary})
    text = rejected(monkeypatch, write(tmp_path, _module(), doc))
    assert f"ConfigMap default/build ({tmp_path / 'module.yaml'} (document 2)): " \
           f"data: must have at most {LIMIT} bytes (data and binaryData), has {LIMIT + 1}" \
           in text
    assert "the API server" in text


def test_a_key_in_both_data_and_binary_data_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    doc = _configmap({"dockerfile": DOCKERFILE, "same": "x"}, {"same": b"y"})
    text = rejected(monkeypatch, write(tmp_path, _module(), doc))
    assert "data.same: duplicate of key present in binaryData" in text
    assert "binaryData.same: duplicate of key present in data" in text


def test_binary_data_that_is_no_base64_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    doc = _configmap({"dockerfile": DOCKERFILE})
    doc["binaryData"] = {"blob": "not base64!"}
    text = rejected(monkeypatch, write(tmp_path, _module(), doc))
    assert "binaryData.blob: is not valid base64" in text


def test_a_secret_of_one_mib_of_values_is_admitted_whatever_its_keys(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # ValidateSecret counts len(value) only: long key names cannot push it over.
    values = {f"{'k' * 200}{n}": b"v" * (LIMIT // 4) for n in range(4)}
    assert sum(len(v) for v in values.values()) == LIMIT
    _valid(monkeypatch, write(tmp_path, minimal(), _secret(values)))


def test_a_secret_over_one_mib_is_refused(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    values = {"a": b"v" * (LIMIT // 2), "b": b"v" * (LIMIT // 2 + 1)}
    text = rejected(monkeypatch, write(tmp_path, minimal(), _secret(values)))
    assert f"Secret default/extra ({tmp_path / 'module.yaml'} (document 2)): " \
           f"data: must have at most {LIMIT} bytes, has {LIMIT + 1}" in text
    assert "vvvv" not in text
