"""Reading manifests strictly: field paths, references, namespaces, Secret redaction."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from dtk.errors import DtkError
from dtk.kmmapi.load import load_documents
from tests.unit.kmm_support import MANIFESTS, container, dtk, minimal, rejected, write

C = "spec.moduleLoader.container"


def _cm(name: str, key: str = "dockerfile") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {key: "FROM scratch\n"}}


def _secret(name: str, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, **fields}


def _built() -> dict[str, Any]:
    doc = minimal()
    container(doc)["build"] = {"dockerfileConfigMap": {"name": "df"},
                               "secrets": [{"name": "token"}]}
    return doc


def test_example_bundle() -> None:
    bundle = load_documents([MANIFESTS])
    mod = bundle.module(None)
    assert (mod.name, mod.namespace) == ("kmm-ci", "drivers")
    assert mod.source.file.endswith("manifests/module.yaml")
    assert mod.image_repo_secret == "registry-auth"
    assert sorted(bundle.configmaps) == [("drivers", "kmm-ci-dockerfile"),
                                         ("drivers", "kmm-ci-dockerfile-rt")]
    cert = bundle.secret("drivers", "signing-cert")
    assert cert is not None and cert.data["cert"] == b"-----BEGIN CERTIFICATE-----\n"
    assert mod.module_loader is not None
    km = mod.module_loader.container.kernel_mappings
    assert km is not None and [k.regexp for k in km] == [
        "", "rt-amd64$", r"^5\.14\.0-\d+\.\S+\.el9", r"6\.12\."]
    assert mod.tolerations[1].toleration_seconds == 300


def test_unknown_field_names_its_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["kernelMappings"][1]["regexpp"] = "x"
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert f"{C}.kernelMappings[1].regexpp: unknown field" in text
    assert "(document 1)" in text


def test_wrong_type_names_its_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["kernelMappings"][1]["regexp"] = 5
    doc["spec"]["selector"] = {"gpu": True}
    container(doc)["modprobe"]["parameters"] = "debug=1"
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert f"{C}.kernelMappings[1].regexp: must be a string, got number" in text
    assert "spec.selector.gpu: must be a string, got boolean" in text
    assert f"{C}.modprobe.parameters: must be a list of strings, got string" in text


def test_missing_required_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    del container(doc)["modprobe"]
    container(doc)["sign"] = {"filesToSign": ["/opt/x.ko"]}
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert f"{C}.modprobe: required field is missing" in text
    assert f"{C}.sign.keySecret: required field is missing" in text
    assert f"{C}.sign.certSecret: required field is missing" in text


def test_a_missing_field_is_one_error_not_its_contents_too(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The API server names a missing required object once; what it would have held is
    not missing too (KMM's developer page has `moduleLoader` without a `container`)."""
    doc = minimal()
    doc["spec"]["moduleLoader"] = {"serviceAccountName": "loader"}
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert f"{C}: required field is missing" in text
    assert f"{C}.modprobe" not in text
    assert "(1 problem(s))" in text


def test_missing_configmap_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = rejected(monkeypatch, write(tmp_path, _built(), _secret("token", stringData={})))
    assert (f"{C}.build.dockerfileConfigMap.name: ConfigMap default/df is not among the "
            "documents given") in text


def test_configmap_key_must_be_dockerfile(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    path = write(tmp_path, _built(), _cm("df", key="Dockerfile"),
                 _secret("token", stringData={"t": "x"}))
    text = rejected(monkeypatch, path)
    assert "ConfigMap default/df has no key 'dockerfile' (keys: Dockerfile)" in text


def test_missing_build_secret(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = rejected(monkeypatch, write(tmp_path, _built(), _cm("df")))
    assert f"{C}.build.secrets[0].name: Secret default/token is not among" in text


def test_sign_secrets_need_their_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["kernelMappings"][0]["sign"] = {
        "keySecret": {"name": "k"}, "certSecret": {"name": "c"}, "unsignedImage": "r.example/u:1",
        "filesToSign": ["/opt/a.ko"]}
    text = rejected(monkeypatch, write(tmp_path, doc, _secret("k", stringData={"pem": "S3CR3T"})))
    assert f"{C}.kernelMappings[0].sign.keySecret.name: Secret default/k has no key 'key' " \
           "(keys: pem)" in text
    assert f"{C}.kernelMappings[0].sign.certSecret.name: Secret default/c is not among" in text
    assert "S3CR3T" not in text


def test_image_repo_secret_type(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    doc["spec"]["imageRepoSecret"] = {"name": "pull"}
    secret = _secret("pull", type="Opaque", stringData={".dockerconfigjson": "{}"})
    text = rejected(monkeypatch, write(tmp_path, doc, secret))
    assert ("spec.imageRepoSecret.name: Secret default/pull must be of type "
            "kubernetes.io/dockerconfigjson, got 'Opaque'") in text


def test_namespace_flag_and_conflict(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    del doc["metadata"]["namespace"]
    bundle = load_documents([write(tmp_path, doc)], "kmm")
    assert bundle.module(None).namespace == "kmm"
    assert load_documents([write(tmp_path, doc)]).module(None).namespace == "default"
    doc["metadata"]["namespace"] = "other"
    text = rejected(monkeypatch, write(tmp_path, doc), "-n", "kmm")
    assert "metadata.namespace: is 'other' but -n/--namespace is 'kmm'" in text


def test_references_resolve_in_the_module_namespace(monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path) -> None:
    cm = _cm("df")
    cm["metadata"]["namespace"] = "elsewhere"
    text = rejected(monkeypatch, write(tmp_path, _built(), cm,
                                       _secret("token", stringData={"t": "x"})))
    assert "ConfigMap default/df is not among the documents given" in text


def test_directory_reads_manifests_only(tmp_path: Path) -> None:
    for f in MANIFESTS.iterdir():
        shutil.copy(f, tmp_path / f.name)
    (tmp_path / "README.md").write_text("not a manifest: ignored like kubectl does")
    bundle = load_documents([tmp_path])
    assert len(bundle.modules) == 1 and len(bundle.secrets) == 5


def test_kind_list_and_unknown_kinds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    listed = {"apiVersion": "v1", "kind": "List", "items": [minimal(), {
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}}]}
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(write(tmp_path, listed)))
    assert code == 0, text  # other kinds are skipped with a note, as issue 17 §3 asks
    assert "(document 1, items[1]): ServiceAccount sa skipped" in text


def test_wrong_api_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    doc["apiVersion"] = "kmm.sigs.x-k8s.io/v1alpha1"
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert "apiVersion: Module must be kmm.sigs.x-k8s.io/v1beta1, got " \
           "'kmm.sigs.x-k8s.io/v1alpha1'" in text


def test_duplicate_objects(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = rejected(monkeypatch, write(tmp_path, minimal(), minimal()))
    assert "Module default/hello is also defined in" in text


def test_missing_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = rejected(monkeypatch, tmp_path / "nope.yaml")
    assert text.startswith(f"error: {tmp_path / 'nope.yaml'}: no such file or directory")


def test_secret_values_never_shown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bundle = load_documents([MANIFESTS])
    secret = bundle.secret("drivers", "signing-key")
    assert secret is not None
    assert "TOPSECRET" not in repr(secret) and "TOPSECRET" not in str(secret)
    assert "TOPSECRET" not in repr(bundle)
    assert repr(secret) == ("Secret(name='signing-key', namespace='drivers', type='Opaque', "
                            "keys=[key], values=<redacted>)")
    bad = _secret("s", data={"key": "TOPSECRET!!"})
    text = rejected(monkeypatch, write(tmp_path, minimal(), bad))
    assert "data.key: is not valid base64 (value not shown)" in text
    assert "TOPSECRET" not in text


def test_yaml_errors_do_not_quote_the_line(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("apiVersion: v1\nkind: Secret\nstringData:\n  key: TOPSECRET: [\n")
    text = rejected(monkeypatch, path)
    assert "TOPSECRET" not in text
    assert "is not valid YAML or JSON" in text and "at line 4" in text


def test_load_raises_dtk_error_listing_all(tmp_path: Path) -> None:
    doc = minimal()
    doc["spec"]["extra"] = 1
    doc["metadata"]["labelz"] = {}
    with pytest.raises(DtkError) as err:
        load_documents([write(tmp_path, doc)])
    assert err.value.message.splitlines()[0] == "invalid manifests (2 problem(s)):"


def test_validate_json(monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(MANIFESTS), "--json")
    assert code == 0
    assert '"valid": true' in text
