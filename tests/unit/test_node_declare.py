"""`dtk node add|list|remove`: declarations as KMM Module files, all or nothing."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from dtk.cli.main import run_cli
from dtk.node import declare
from dtk.node.layout import Layout

K = "6.1.0-57-amd64"
MODULE = """\
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: %(name)s, namespace: default}
spec:
  selector: {}
  imageRepoSecret: {name: pull}
  moduleLoader:
    container:
      modprobe: {moduleName: %(module)s}
      build:
        dockerfileConfigMap: {name: dockerfile}
      sign:
        keySecret: {name: signing-key}
        certSecret: {name: signing-cert}
        filesToSign: ['/opt/lib/modules/${KERNEL_FULL_VERSION}/%(module)s.ko']
      kernelMappings:
      - literal: %(kernel)s
        containerImage: reg.example/%(module)s:${KERNEL_FULL_VERSION}
---
apiVersion: v1
kind: Secret
metadata: {name: pull, namespace: default}
type: kubernetes.io/dockerconfigjson
stringData: {.dockerconfigjson: '{"auths": {}}'}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = run_cli(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def module_file(tmp_path: Path, name: str = "drv", module: str = "drv",
                kernel: str = K) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(MODULE % {"name": name, "module": module, "kernel": kernel})
    return path


def test_a_module_file_is_stored_without_build_sign_and_their_secrets(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    code, text = run(capsys, "node", "add", "-f", str(module_file(tmp_path)), "--kernel", K,
                     "--root", str(root))
    assert code == 0, text
    stored = root / "etc/dtk/modules/drv.yaml"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600  # it holds registry credentials
    docs = list(yaml.safe_load_all(stored.read_text()))
    container = docs[0]["spec"]["moduleLoader"]["container"]
    assert "build" not in container and "sign" not in container
    assert [d["kind"] for d in docs] == ["Module", "Secret"]
    assert docs[1]["metadata"]["name"] == "pull"
    decl = declare.find(Layout(root), "drv")
    assert decl.resolve(K).image == f"reg.example/drv:{K}"
    assert decl.secret() is not None


def test_kernel_full_version_is_normalised_as_kmm_does(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    """KMM replaces characters outside [A-Za-z0-9._-] with '_' (kmm-facts 2.4)."""
    kernel = "6.12.117+deb12-amd64"
    code, text = run(capsys, "node", "add", "reg.example/x:${KERNEL_FULL_VERSION}",
                     "--module", "my_drv", "--param", "debug=1", "--kernel", kernel,
                     "--root", str(tmp_path))
    assert code == 0, text
    decl = declare.find(Layout(tmp_path), "my-drv")
    assert decl.resolve(kernel).image == "reg.example/x:6.12.117_deb12-amd64"
    assert decl.modprobe.parameters == ("debug=1",)
    code, text = run(capsys, "node", "list", "--json", "--root", str(tmp_path))
    assert code == 0
    assert [(d["name"], d["moduleName"], d["parameters"]) for d in json.loads(text)] == [
        ("my-drv", "my_drv", ["debug=1"])]


def test_a_field_error_names_its_path_and_writes_nothing(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    bad = module_file(tmp_path)
    bad.write_text(bad.read_text().replace("{moduleName: drv}", "{moduleName: drv, bogus: 1}"))
    (tmp_path / "root").mkdir()
    code, text = run(capsys, "node", "add", "-f", str(bad), "--kernel", K,
                     "--root", str(tmp_path / "root"))
    assert code == 2
    assert f"{bad} (document 1): spec.moduleLoader.container.modprobe.bogus: unknown field" \
        in text
    assert not (tmp_path / "root/etc").exists()


def test_a_kernel_no_mapping_matches_writes_nothing(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    """Two Modules in one file, one resolving and one not: neither is declared."""
    both = tmp_path / "both.yaml"
    ok = module_file(tmp_path, "ok", "ok").read_text()
    other = module_file(tmp_path, "other", "other", "6.1.0-1-amd64").read_text()
    both.write_text(ok + "---\n" + other.split("---\n")[0])
    (tmp_path / "root").mkdir()
    code, text = run(capsys, "node", "add", "-f", str(both), "--kernel", K,
                     "--root", str(tmp_path / "root"))
    assert code == 2
    assert f"no kernelMapping of other matches kernel {K}" in text
    assert not (tmp_path / "root/etc/dtk/modules").exists()


def test_usage_mistakes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for argv, said in ((("node", "add"), "give either -f"),
                       (("node", "add", "img:1"), "needs --module"),
                       (("node", "add", "img:1", "--module", "m", "--param", "x"),
                        "is not key=value"),
                       (("node", "add", "img:1", "--module", "Bad_Name!"),
                        "is not a valid declaration name"),
                       (("node", "remove", "nothing"), "no declaration named 'nothing'")):
        code, text = run(capsys, *argv, "--root", str(tmp_path))
        assert code == 2, (argv, text)
        assert said in text, (argv, text)
        assert "Traceback" not in text


def test_adding_a_name_that_exists_is_refused_unless_replace(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A second `add` under a declared name would silently drop the first declaration:
    refused (nothing written) unless the owner says --replace."""
    root = tmp_path / "root"
    root.mkdir()
    first = ("node", "add", "reg.example/a:1", "--module", "drv", "--kernel", K,
             "--root", str(root))
    assert run(capsys, *first)[0] == 0
    stored = root / "etc/dtk/modules/drv.yaml"
    before = stored.read_bytes()
    for argv in (("node", "add", "reg.example/b:1", "--module", "drv"),
                 ("node", "add", "-f", str(module_file(tmp_path)))):
        code, text = run(capsys, *argv, "--kernel", K, "--root", str(root))
        assert code == 2, text
        assert "drv is already declared" in text and "--replace" in text
        assert "Traceback" not in text
        assert stored.read_bytes() == before
    code, text = run(capsys, "node", "add", "reg.example/b:1", "--module", "drv", "--replace",
                     "--kernel", K, "--root", str(root))
    assert code == 0, text
    assert declare.find(Layout(root), "drv").resolve(K).image == "reg.example/b:1"
