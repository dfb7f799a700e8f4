"""A kubernetes.io/dockerconfigjson Secret is refused as the API server refuses it
(pkg/apis/core/validation: `.dockerconfigjson` required and a JSON object; the
path written `data[.dockerconfigjson]`, field.Path's notation for a map key), and
one without `auths` because no reader of it (kubelet, skopeo) finds credentials."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from tests.unit.kmm_support import dtk, minimal, rejected, write


def _pull_secret(**data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": "pull", "namespace": "default"}, "data": data}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _module() -> dict[str, Any]:
    doc = minimal()
    doc["spec"]["imageRepoSecret"] = {"name": "pull"}
    return doc


@pytest.mark.parametrize(("content", "message"), [
    ('{"auths": {"r.example.com": {"auth": "SECRET"}', "is not valid JSON (line 1, column 47)"),
    ('{"credsStore": "SECRET"}', "has no 'auths' object"),
    ('["SECRET"]', "has no 'auths' object"),
])
def test_content_that_is_no_docker_config_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, message: str) -> None:
    secret = _pull_secret(**{".dockerconfigjson": _b64(content)})
    text = rejected(monkeypatch, write(tmp_path, _module(), secret))
    assert f"Secret default/pull ({tmp_path / 'module.yaml'} (document 2)): " \
           f"data[.dockerconfigjson]: {message}" in text
    assert "SECRET" not in text


def test_a_valid_one_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = _pull_secret(**{".dockerconfigjson": _b64('{"auths": {}}')})
    code, text = dtk(monkeypatch, "module", "validate", "-f",
                     str(write(tmp_path, _module(), secret)))
    assert code == 0, text


def test_bad_base64_is_one_error_with_the_api_servers_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = _pull_secret(**{".dockerconfigjson": "SECRET!!"})
    text = rejected(monkeypatch, write(tmp_path, _module(), secret))
    assert "data[.dockerconfigjson]: is not valid base64 (value not shown)" in text
    assert "data..dockerconfigjson" not in text
    assert "has no key" not in text  # no knock-on error for the same cause
    assert "SECRET" not in text
