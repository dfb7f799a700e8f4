"""A kubernetes.io/dockerconfigjson Secret is refused exactly as the API server refuses it
(pkg/apis/core/validation ValidateSecret: `.dockerconfigjson` required, and its value must
json.Unmarshal into a map[string]interface{}: a JSON object, or `null`; the path written
`data[.dockerconfigjson]`, field.Path's notation for a map key). One without registry
credentials (`{}`, `null`, no `auths`) is admitted with a warning: the API server takes
it, and an empty credentials Secret is a legitimate placeholder."""

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
    ('["SECRET"]', "must be a JSON object, not a JSON list"),
    ('"SECRET"', "must be a JSON object, not a JSON str"),
    ('{"auths": NaN}', "is not valid JSON"),  # Python's json takes NaN; Go's does not
    ("", "is not valid JSON (line 1, column 1)"),
])
def test_content_that_is_no_docker_config_is_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, message: str) -> None:
    secret = _pull_secret(**{".dockerconfigjson": _b64(content)})
    text = rejected(monkeypatch, write(tmp_path, _module(), secret))
    assert f"Secret default/pull ({tmp_path / 'module.yaml'} (document 2)): " \
           f"data[.dockerconfigjson]: {message}" in text
    assert "SECRET" not in text


def test_a_valid_one_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = _pull_secret(**{".dockerconfigjson": _b64('{"auths": {"r.example": {}}}')})
    code, text = dtk(monkeypatch, "module", "validate", "-f",
                     str(write(tmp_path, _module(), secret)))
    assert code == 0, text
    assert "warning" not in text


@pytest.mark.parametrize("content", ["{}", "null", '{"auths": {}}', '{"credsStore": "SECRET"}'])
def test_no_credentials_is_admitted_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str) -> None:
    """What the API server admits, dtk admits: the warning says why it is useless."""
    secret = _pull_secret(**{".dockerconfigjson": _b64(content)})
    code, text = dtk(monkeypatch, "module", "validate", "-f",
                     str(write(tmp_path, _module(), secret)))
    assert code == 0, text
    assert (f"warning: Secret default/pull ({tmp_path / 'module.yaml'} (document 2)): "
            "data[.dockerconfigjson] has no 'auths' object with a registry in it: the API "
            "server admits it") in text
    assert "SECRET" not in text


def test_a_dockercfg_secret_follows_the_api_servers_rule_too(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockercfg",
              "metadata": {"name": "old", "namespace": "default"},
              "data": {".dockercfg": _b64("[1]")}}
    text = rejected(monkeypatch, write(tmp_path, minimal(), secret))
    assert "Secret default/old" in text and \
        "data[.dockercfg]: must be a JSON object, not a JSON list" in text
    assert text.startswith("error: the API server would reject 1 field(s)")
    assert "hint: the API server refuses the Secrets" in text


def test_bad_base64_is_one_error_with_the_api_servers_path(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = _pull_secret(**{".dockerconfigjson": "SECRET!!"})
    text = rejected(monkeypatch, write(tmp_path, _module(), secret))
    assert "data[.dockerconfigjson]: is not valid base64 (value not shown)" in text
    assert "data..dockerconfigjson" not in text
    assert "has no key" not in text  # no knock-on error for the same cause
    assert "SECRET" not in text
