"""`dtk render job`: every rendered file is valid by its platform's own schema, read
offline (no API server or CI service runs here): Kubernetes' OpenAPI-derived schemas
as `kubernetes-validate` ships them, GitHub's and GitLab's as `check-jsonschema`
vendors them. And the arguments reach dtk in each worker as the user wrote them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from dtk.cli.main import run_cli
from dtk.errors import DtkError
from dtk.fanout.render import FanOut, github, gitlab, kubernetes

KUBERNETES = "1.37.0"  # the newest schemas the installed kubernetes-validate ships
ARGS = ("--dkms", "acpi-call-dkms", "--kernels", "6.1,latest",
        "--image", "127.0.0.1:5000/d/${MOD_NAME}:${KERNEL_FULL_VERSION}", "--push",
        "--build-arg", "NOTE=it's $(not) a `command`; $$ \"quoted\"")
SPEC = FanOut(4, "127.0.0.1:5000/dtk:1", "127.0.0.1:5000/dtk-cache", ARGS)


def _schema(name: str) -> dict[str, Any]:
    text = resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(
        f"{name}.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


@pytest.mark.parametrize("shards", [1, 4, 200])
def test_the_jobs_are_valid_kubernetes(shards: int) -> None:
    spec = FanOut(shards, SPEC.dtk_image, SPEC.cache, ARGS)
    for doc in kubernetes(spec):
        # strict: an unknown field is an error too, as `kubectl apply --validate=strict`
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)
    job = kubernetes(spec)[0]["spec"]
    assert job["completionMode"] == "Indexed"
    assert job["completions"] == job["parallelism"] == shards


def test_the_ci_files_are_valid() -> None:
    for shards in (1, 4):
        spec = FanOut(shards, SPEC.dtk_image, SPEC.cache, ARGS)
        jsonschema.validate(github(spec), _schema("github-workflows"))
        jsonschema.validate(gitlab(spec), _schema("gitlab-ci"))
    broken = github(SPEC)
    del broken["jobs"]["shard"]["runs-on"]
    with pytest.raises(jsonschema.ValidationError):  # the schema does check
        jsonschema.validate(broken, _schema("github-workflows"))
    broken_ci = gitlab(SPEC)
    broken_ci["dtk-build-shard"]["parallel"] = 201
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken_ci, _schema("gitlab-ci"))


def _fake_dtk(tmp_path: Path) -> dict[str, str]:
    """A `dtk` on PATH that writes its argv as JSON: what the worker's shell hands it."""
    fake = tmp_path / "bin" / "dtk"
    fake.parent.mkdir()
    fake.write_text("#!/usr/bin/env python3\nimport json, sys\n"
                    "print(json.dumps(sys.argv[1:]))\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}")


def test_a_pod_hands_dtk_the_users_arguments_and_its_shard(tmp_path: Path) -> None:
    """The command as the kubelet runs it: $$ reduced to $ (Kubernetes' rule for
    $(VAR) references), then /bin/sh with the index Kubernetes sets."""
    env = _fake_dtk(tmp_path)
    command = kubernetes(SPEC)[0]["spec"]["template"]["spec"]["containers"][0]["command"]
    argv = [part.replace("$$", "$") for part in command]
    out = subprocess.run(argv, env={**env, "JOB_COMPLETION_INDEX": "2"},
                         capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ["build", *ARGS, "--shard", "3/4", "--cache", SPEC.cache,
                               "--json"]


def test_a_gitlab_job_hands_dtk_the_users_arguments(tmp_path: Path) -> None:
    env = _fake_dtk(tmp_path)
    script = gitlab(SPEC)["dtk-build-shard"]["script"][1].replace(" > ", " >&1 #")
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=True, env={**env, "CI_NODE_INDEX": "4"}).stdout
    assert json.loads(out) == ["build", *ARGS, "--shard", "4/4", "--cache", SPEC.cache,
                               "--json"]


@pytest.mark.parametrize(("change", "message"), [
    ({"build_args": ("--dkms", "x", "--shard", "1/2")}, "--shard is set by the rendered"),
    ({"build_args": ("--cache=r/x",)}, "--cache=r/x is set by the rendered"),
    ({"name": "Bad_Name"}, "is not a DNS-1123 label"),
    ({"namespace": "-x"}, "is not a DNS-1123 label"),
    ({"registry_secret": "a..b"}, "is not a DNS-1123 subdomain"),
    ({"shards": 0}, "not between 1 and 200"),
    ({"dtk_image": "-rm"}, "is not an image reference"),
])
def test_what_a_cluster_would_refuse_is_refused_here(change: dict[str, Any],
                                                      message: str) -> None:
    values = {"shards": 2, "dtk_image": "i", "cache": "127.0.0.1:1/c", "build_args": ARGS,
              **change}
    with pytest.raises(DtkError, match=message):
        FanOut(**values)


def test_the_command_writes_valid_files(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    base = ["render", "job", "--shards", "2", "--dtk-image", "127.0.0.1:5000/dtk:1",
            "--cache", "127.0.0.1:5000/dtk-cache", "-o", str(tmp_path), "--json"]
    for target in ("kubernetes", "github", "gitlab"):
        assert run_cli([*base, "--target", target, "--", *ARGS]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["dtk-build-job.yaml", "dtk-build-merge-job.yaml",
                     "dtk-build.github-workflow.yml", "dtk-build.gitlab-ci.yml"]
    for name in files[:2]:
        kubernetes_validate.validate(yaml.safe_load((tmp_path / name).read_text()),
                                     KUBERNETES, strict=True)
    capsys.readouterr()
    # dtk build's own parser refuses a bad argument before anything is written.
    assert run_cli([*base[:-3], "-o", str(tmp_path / "no"), "--", "--no-such"]) == 2
    assert not (tmp_path / "no").exists()
