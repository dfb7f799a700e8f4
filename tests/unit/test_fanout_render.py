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
from dtk.fanout.render import FanOut, Sources, github, gitlab, kubernetes

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
                               "--json", "--exit-zero"]


def test_a_gitlab_job_hands_dtk_the_users_arguments(tmp_path: Path) -> None:
    env = _fake_dtk(tmp_path)
    script = gitlab(SPEC)["dtk-build-shard"]["script"][1].replace(" > ", " >&1 #")
    out = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                         check=True, env={**env, "CI_NODE_INDEX": "4"}).stdout
    assert json.loads(out) == ["build", *ARGS, "--shard", "4/4", "--cache", SPEC.cache,
                               "--json", "--exit-zero"]


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


def test_a_shard_is_retried_alone_and_a_refusal_is_not_retried() -> None:
    """Issue 28 §7: `backoffLimit: 2` beside `backoffLimitPerIndex: 1` capped the
    retries of all shards together at two; a shard's refused arguments (exit 2) fail
    its index at once, an evicted pod does not count, and the merge's verdict (exit
    1: a cell failed) is not retried into a two-hour wait."""
    shards, merge = kubernetes(SPEC)
    assert "backoffLimit" not in shards["spec"]
    assert shards["spec"]["backoffLimitPerIndex"] == 1
    rules = shards["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "FailIndex", "onExitCodes": {
        "containerName": "dtk", "operator": "In", "values": [2]}} in rules
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]} in rules
    merge_rules = merge["spec"]["podFailurePolicy"]["rules"]
    assert merge_rules[0] == {"action": "FailJob", "onExitCodes": {
        "containerName": "dtk", "operator": "In", "values": [1, 2]}}
    # the container the rules name is the one that runs dtk
    assert shards["spec"]["template"]["spec"]["containers"][0]["name"] == "dtk"


def test_every_target_pulls_dtks_image_with_credentials() -> None:
    """Issue 28 §5: no target carried credentials to pull --dtk-image."""
    pod = kubernetes(SPEC)[0]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "dtk-registry"}]
    other = FanOut(2, SPEC.dtk_image, SPEC.cache, ARGS, pull_secret="ghcr-pull")
    assert kubernetes(other)[1]["spec"]["template"]["spec"]["imagePullSecrets"] == [
        {"name": "ghcr-pull"}]
    for job in github(SPEC)["jobs"].values():
        assert job["container"]["credentials"] == {
            "username": "${{ secrets.DTK_IMAGE_USERNAME }}",
            "password": "${{ secrets.DTK_IMAGE_PASSWORD }}"}
    pipeline = gitlab(SPEC)
    for name in ("dtk-build-shard", "dtk-build-merge"):
        # dtk's image has `dtk` as its entrypoint: the runner's shell must not go to it
        assert pipeline[name]["image"] == {"name": SPEC.dtk_image, "entrypoint": [""]}
    assert "DOCKER_AUTH_CONFIG" in pipeline["dtk-build-shard"]["script"][0]


def test_the_github_shards_build_on_the_repositorys_checkout() -> None:
    """Issue 28 §5: the README's own `--dkms ./mydriver` needs the repository."""
    steps = github(SPEC)["jobs"]["shard"]["steps"]
    assert steps[0] == {"uses": "actions/checkout@v4"}
    assert [s.get("name") for s in steps[1:3]] == ["registry credentials", "build this shard"]


def test_a_pod_fetches_its_sources_from_git(tmp_path: Path) -> None:
    """The init container's script, run by /bin/sh with real git on a real repository
    (a file:// URL here; the integration test serves it over git:// to pods): each of a
    branch, a tag and a commit id gives that commit's files, and the build container
    starts in them. The script's absolute workspace path is pointed into tmp_path."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q", "-b", "main"], check=True)
    (repo / "mydriver").mkdir()
    (repo / "mydriver" / "dkms.conf").write_text("PACKAGE_NAME=one\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    subprocess.run([*git, "tag", "v1"], check=True)
    first = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                           check=True).stdout.strip()
    (repo / "mydriver" / "dkms.conf").write_text("PACKAGE_NAME=two\n")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    for revision, expected in (("HEAD", "two"), ("main", "two"), ("v1", "one"),
                               (first, "one")):
        spec = FanOut(2, "i", "127.0.0.1:1/c", ("--dkms", "./mydriver", "--kernels", "6.1"),
                      sources=Sources(f"file://{repo}", revision))
        pod = kubernetes(spec)[0]["spec"]["template"]["spec"]
        [init] = pod["initContainers"]
        work = tmp_path / f"work-{revision}"
        argv = [a.replace("$$", "$").replace("/workspace", str(work)) for a in init["command"]]
        subprocess.run(argv, check=True, capture_output=True)
        assert pod["containers"][0]["workingDir"] == "/workspace/src"
        assert (work / "src" / "mydriver" / "dkms.conf").read_text() == \
            f"PACKAGE_NAME={expected}\n"
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert mounts["workspace"] == "/workspace"
        kubernetes_validate.validate(kubernetes(spec)[0], KUBERNETES, strict=True)


def test_a_private_repository_is_fetched_with_gits_credential_store() -> None:
    spec = FanOut(2, "i", "127.0.0.1:1/c", ARGS,
                  sources=Sources("https://git.example.com/t/d.git", "main", "dtk-git"))
    pod = kubernetes(spec)[0]["spec"]["template"]["spec"]
    [init] = pod["initContainers"]
    assert "store --file=/run/secrets/dtk-git/.git-credentials" in init["command"][2]
    assert {"name": "git", "secret": {"secretName": "dtk-git", "items": [
        {"key": ".git-credentials", "path": ".git-credentials"}]}} in pod["volumes"]
    for doc in kubernetes(spec):
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize(("target", "extra", "args", "message"), [
    ("kubernetes", [], ["--dkms", "./mydriver"], "the pods have no copy of ./mydriver"),
    ("kubernetes", [], ["-f", "Containerfile"], "the pods have no copy of Containerfile"),
    ("kubernetes", [], ["--dkms", "x", "--kernels", "@k.txt"], "no copy of k.txt"),
    ("github", ["--source-repo", "https://h/r.git"], ["--dkms", "x"],
     "are for --target kubernetes: github checks out"),
    ("kubernetes", ["--source-secret", "s"], ["--dkms", "x"], "need --source-repo"),
    ("kubernetes", ["--source-repo", "https://h/r.git", "--source-revision", "--upload-pack=x"],
     ["--dkms", "x"], "is not a branch, tag or commit"),
])
def test_sources_the_workers_cannot_have_are_refused(
        tmp_path: Path, target: str, extra: list[str], args: list[str], message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    build = args if "--kernels" in args else [*args, "--kernels", "6.1"]
    code = run_cli(["render", "job", "--shards", "2", "--dtk-image", "i", "--cache",
                    "127.0.0.1:5000/c", "--target", target, "-o", str(out), *extra, "--",
                    *build])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
