"""Names and keys from manifests never become paths outside their own directory.

Expected values come from Kubernetes' validation (`IsConfigMapKey`,
`IsDNS1123Subdomain`, `IsDNS1123Label` in k8s.io/apimachinery): what the API server
refuses, dtk refuses at load time, naming the field.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from dtk.driver.containerfile import secret_volumes
from dtk.driver.plan import BuildSecret
from dtk.errors import DtkError
from dtk.k8snames import (
    config_map_key_problems,
    dns1123_label_problems,
    dns1123_subdomain_problems,
)
from dtk.kmmapi.reader import child
from tests.unit.kmm_support import container, dtk, minimal, rejected, write

# Examples from apimachinery's validation_test.go (TestIsConfigMapKey).
GOOD_KEYS = ["a", "good", "good-good", "still.good", "this.is.also.good", ".so.is.this",
             "THIS_IS_GOOD", "so_is_this_17"]
BAD_KEYS = ["", ".", "..", "..bad", "b*d", "bad!&bad", "/tmp/x", "../../../../tmp/x", "a/b",
            "x" * 254]


@pytest.mark.parametrize("key", GOOD_KEYS)
def test_config_map_keys_kubernetes_accepts(key: str) -> None:
    assert config_map_key_problems(key) == []


@pytest.mark.parametrize("key", BAD_KEYS)
def test_config_map_keys_kubernetes_refuses(key: str) -> None:
    assert config_map_key_problems(key)


@pytest.mark.parametrize("name", ["a", "ab", "a-b", "0", "a.b", "a-1.b-2", "x" * 253])
def test_subdomains(name: str) -> None:
    assert dns1123_subdomain_problems(name) == []


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a..b", "a_b", "../x", "a/b", "a:b",
                                  "x" * 254])
def test_not_subdomains(name: str) -> None:
    assert dns1123_subdomain_problems(name)


@pytest.mark.parametrize("name", ["a.b", "x" * 64, "A"])
def test_not_labels(name: str) -> None:
    assert dns1123_label_problems(name)


def _module_with_build_secret(secret_name: str, key: str) -> list[dict[str, Any]]:
    doc = minimal()
    container(doc)["build"] = {"dockerfileConfigMap": {"name": "df"},
                               "secrets": [{"name": secret_name}]}
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "df"},
          "data": {"dockerfile": "FROM scratch\n"}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret_name},
              "data": {key: base64.b64encode(b"payload").decode()}}
    return [doc, cm, secret]


@pytest.mark.parametrize("key", ["../../../../tmp/x", "/tmp/x", "..", "a/b"])
def test_hostile_secret_key_is_refused_at_load(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path, key: str) -> None:
    text = rejected(monkeypatch, write(tmp_path, *_module_with_build_secret("token", key)))
    assert f"{child('data', key)}:" in text and "key" in text


def test_hostile_string_data_key_is_refused(monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    docs = _module_with_build_secret("token", "ok")
    docs[2]["stringData"] = {"../escape": "v"}
    text = rejected(monkeypatch, write(tmp_path, *docs))
    assert "stringData[../escape]:" in text


@pytest.mark.parametrize("name", ["../up", "Token", "a:b", "a/b"])
def test_secret_name_must_be_a_subdomain(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         name: str) -> None:
    text = rejected(monkeypatch, write(tmp_path, *_module_with_build_secret(name, "k")))
    assert "metadata.name" in text


def test_namespace_must_be_a_label(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    doc["metadata"]["namespace"] = "a.b"
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert "metadata.namespace" in text


def test_valid_build_secret_is_admitted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, text = dtk(monkeypatch, "module", "validate", "-f",
                     str(write(tmp_path, *_module_with_build_secret("token", "a.b_c-1"))))
    assert code == 0, text


@pytest.mark.parametrize("key", ["../../../../{tmp}/escaped", "{tmp}/escaped", "..", "."])
def test_secret_files_never_leave_their_directory(tmp_path: Path, key: str) -> None:
    """The executor does not rely on load: a BuildSecret made by other code with a
    hostile key is refused before any file is written."""
    hostile = key.format(tmp=str(tmp_path).lstrip("/") if key.startswith("..")
                         else str(tmp_path))
    secret = BuildSecret("token", ((hostile, b"payload"),))
    with pytest.raises(DtkError), secret_volumes([secret]):
        pass
    assert not (tmp_path / "escaped").exists()


@pytest.mark.parametrize("name", ["../up", "a:b", "/abs"])
def test_secret_names_never_leave_their_directory(tmp_path: Path, name: str) -> None:
    with pytest.raises(DtkError), secret_volumes([BuildSecret(name, (("k", b"v"),))]):
        pass


def test_secret_files_are_private(tmp_path: Path) -> None:
    with secret_volumes([BuildSecret("token", (("k", b"v"),))]) as volumes:
        directory = Path(volumes[0].split(":", 1)[0])
        assert volumes[0].endswith(":/run/secrets/token:ro")
        assert directory.stat().st_mode & 0o777 == 0o700
        assert (directory / "k").stat().st_mode & 0o777 == 0o600
        assert (directory / "k").read_bytes() == b"v"
        assert directory.parent.stat().st_mode & 0o077 == 0
    assert not directory.exists()


@pytest.mark.parametrize("form", ["relative", "absolute"])
def test_module_build_refuses_a_hostile_key_before_any_work(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, form: str) -> None:
    """The reported defect: `dtk module build` wrote the Secret's value to the path its
    key named. Now the manifests are refused before anything is planned or written."""
    target = tmp_path / "escaped"
    key = ("../../../.." + str(target)) if form == "relative" else str(target)
    files = write(tmp_path, *_module_with_build_secret("token", key))
    code, text = dtk(monkeypatch, "module", "build", "-f", str(files), "--kernel",
                     "6.1.0-56-amd64")
    assert code == 2, text
    assert "is invalid" in text and "payload" not in text
    assert not target.exists()
