"""Hostile manifests through `dtk module validate` and `dtk module plan`.

Documents of the right shape (Module, ConfigMap, Secret) with generated strings in
every name, key, image and path field: dtk answers with a verdict or one screen of
user error, never a traceback (exit 70 is a bug), and never writes a file outside
its own work and state directories. The command runs in-process (`run_cli`), with
the working directory and XDG directories in a temporary directory; plan runs with
`--no-state`, so no tool is called.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtk.cli.main import run_cli

KERNELS = ("6.1.0-56-amd64", "6.12.117+deb12-rt-amd64", "5.14.0-427.18.1.el9_4.x86_64+rt")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    root = tmp_path_factory.mktemp("fuzz")
    dirs = {name: root / name for name in ("work", "canary", "home", "cache", "state",
                                           "config", "data", "runtime")}
    for path in dirs.values():
        path.mkdir(mode=0o700)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(dirs["work"])
        mp.setenv("HOME", str(dirs["home"]))
        for var, name in (("XDG_CACHE_HOME", "cache"), ("XDG_STATE_HOME", "state"),
                          ("XDG_CONFIG_HOME", "config"), ("XDG_DATA_HOME", "data"),
                          ("XDG_RUNTIME_DIR", "runtime")):
            mp.setenv(var, str(dirs[name]))
        yield dirs


def _hostile(canary: str) -> st.SearchStrategy[str]:
    specials = ["", ".", "..", "../x", "../../../../" + canary.lstrip("/") + "/x",
                canary + "/x", "/etc/passwd", "${", "${A:-$_}", "$$", "$KERNEL_Z",
                "${KERNEL_FULL_VERSION}", "a" * 300, "a:b", "a/b", "-rf", "\n", "a\nb",
                "x@sha256:" + "0" * 64, "UPPER", "é", "\x00", "*", "[", "(?=x)", "\\"]
    text = st.text(st.characters(codec="utf-8"), max_size=40)
    return st.one_of(st.sampled_from(specials), text)


def _valid_name() -> st.SearchStrategy[str]:
    return st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\Z")


NAMED = ("cm", "key_secret", "cert_secret", "build_secret", "module", "namespace", "cm_key",
         "string_key", "build_key")


@st.composite
def manifests(draw: st.DrawFn, canary: str) -> list[dict[str, Any]]:
    """Free fields (images, paths, args, parameters, values) are always hostile; one
    name or key at most is, so that most documents get past loading and their hostile
    strings reach planning and substitution."""
    bad = _hostile(canary)
    hostile = draw(st.sampled_from([*NAMED, None, None, None]))

    def name(field: str) -> str:
        return draw(bad if field == hostile else _valid_name())

    def key(field: str) -> str:
        return draw(bad) if field == hostile else draw(st.from_regex(
            r"\A[-_a-zA-Z0-9][-._a-zA-Z0-9]{0,11}\Z"))

    cm, key_secret, cert_secret, build_secret = (name(f) for f in NAMED[:4])
    ns = name("namespace")
    image = st.builds(lambda a, b: f"{a}:{b}", bad, bad)  # KMM's test: any ':' or '@'
    matcher = draw(st.sampled_from(["literal", "regexp"]))
    mapping: dict[str, Any] = {
        matcher: draw(st.one_of(st.sampled_from([*KERNELS, ".", "^6", "rt"]), bad)
                      if matcher == "literal" else st.sampled_from([".", "^6", "rt", "+", "\\"])),
        "containerImage": draw(image)}
    container: dict[str, Any] = {
        "modprobe": {"moduleName": draw(bad) or "m", "parameters": draw(st.lists(bad, max_size=2)),
                     "firmwarePath": draw(bad),
                     "args": {"load": [draw(bad)], "unload": [draw(bad)]}},
        "kernelMappings": [mapping],
        "inTreeModulesToRemove": draw(st.lists(bad, max_size=2)),
        "build": {"dockerfileConfigMap": {"name": cm},
                  "buildArgs": [{"name": draw(bad), "value": draw(bad)}],
                  "secrets": [{"name": build_secret}]},
        "sign": {"keySecret": {"name": key_secret}, "certSecret": {"name": cert_secret},
                 "unsignedImage": draw(bad),
                 "filesToSign": [f"/opt/{draw(bad)}", *draw(st.lists(bad, max_size=1))]},
    }
    module = {"apiVersion": "kmm.sigs.x-k8s.io/v1beta1", "kind": "Module",
              "metadata": {"name": name("module"), "namespace": ns},
              "spec": {"moduleLoader": {"container": container},
                       "selector": {draw(bad): draw(bad)}}}

    def secret(secret_name: str, keys: list[str]) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": secret_name, "namespace": ns},
                "data": {k: base64.b64encode(draw(bad).encode()).decode() for k in keys},
                "stringData": {key("string_key"): draw(bad)}}

    return [module,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": cm, "namespace": ns},
             "data": {"dockerfile": draw(bad), key("cm_key"): draw(bad)}},
            secret(key_secret, ["key"]), secret(cert_secret, ["cert"]),
            secret(build_secret, [key("build_key")])]


def _run(argv: list[str]) -> tuple[int, str]:
    with CliRunner().isolation() as (out, err, _both):
        code = run_cli(argv)
        return code, out.getvalue().decode(errors="replace") + \
            err.getvalue().decode(errors="replace")


def _files(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def _check(sandbox: dict[str, Path], docs: list[dict[str, Any]], argv: list[str]) -> None:
    work = sandbox["work"]
    manifest = work / "m.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    outside = {name: _files(path) for name, path in sandbox.items() if name != "work"}
    code, text = _run([*argv, "-f", str(manifest)])
    assert code in (0, 1, 2), text
    assert "Traceback" not in text
    assert not list((sandbox["state"]).rglob("crashes/*")), text
    assert {name: _files(path) for name, path in sandbox.items() if name != "work"} == \
        outside
    assert not any(sandbox["canary"].iterdir())


FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(data=st.data())
def test_validate_never_crashes_nor_writes_outside(sandbox: dict[str, Path],
                                                   data: st.DataObject) -> None:
    docs = data.draw(manifests(str(sandbox["canary"])))
    _check(sandbox, docs, ["module", "validate"])


@FUZZ
@given(data=st.data())
def test_plan_never_crashes_nor_writes_outside(sandbox: dict[str, Path],
                                               data: st.DataObject) -> None:
    docs = data.draw(manifests(str(sandbox["canary"])))
    argv = ["module", "plan", "--no-state", "--json"]
    for kernel in KERNELS:
        argv += ["--kernel", kernel]
    _check(sandbox, docs, argv)


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_render_in_cluster_never_crashes_nor_writes_outside(sandbox: dict[str, Path],
                                                            data: st.DataObject) -> None:
    docs = data.draw(manifests(str(sandbox["canary"])))
    argv = ["module", "render", "--in-cluster-build", "--toolkit-registry", "r.example/tk"]
    for kernel in KERNELS:
        argv += ["--kernel", kernel]
    _check(sandbox, docs, argv)
