"""`-f` takes what `kubectl apply -f` takes: a directory's other kinds are skipped
with a note, and an empty file says it is empty (issue 17 §3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.unit.kmm_support import dtk, minimal, write

_DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 1}}
_SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}]}}


def test_a_directory_with_other_kinds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write(tmp_path, minimal(), name="module.yaml")
    write(tmp_path, _DEPLOYMENT, _SERVICE, name="app.yaml")
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(tmp_path))
    assert code == 0, text
    assert f"note: {tmp_path / 'app.yaml'} (document 1): Deployment web skipped" in text
    assert f"note: {tmp_path / 'app.yaml'} (document 2): Service web skipped" in text
    assert f"note: {tmp_path / 'empty.yaml'}: empty (no document in it), skipped" in text
    assert "Module default/hello: valid" in text


def test_an_empty_file_named_itself(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "module.yaml"
    empty.write_text("---\n")
    code, text = dtk(monkeypatch, "module", "plan", "-f", str(empty), "--kernel",
                     "6.1.0-56-amd64", "--no-state")
    assert code == 2
    assert text.startswith(f"error: {empty} is empty: it holds no YAML or JSON document")


def test_a_module_with_the_wrong_api_version_is_still_an_error(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    doc["apiVersion"] = "kmm.sigs.x-k8s.io/v1alpha1"
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(doc))
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(path))
    assert code == 2 and "Module must be kmm.sigs.x-k8s.io/v1beta1" in text


def test_missing_secrets_get_a_hint_that_makes_them(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    doc = minimal()
    doc["spec"]["moduleLoader"]["container"]["kernelMappings"][0]["sign"] = {
        "keySecret": {"name": "k"}, "certSecret": {"name": "c"},
        "unsignedImage": "registry.example.com/u:1", "filesToSign": ["/opt/a.ko"]}
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(write(tmp_path, doc)))
    assert code == 2
    hint = text[text.index("hint: "):]
    assert "dtk keygen" in hint and "--dry-run=client -o yaml" in hint
    assert "--dry-run=server" not in text  # the API server would not reject a missing Secret
