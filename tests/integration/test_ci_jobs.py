"""`dtk render job`'s files for the README's own example, run as GitHub's runner,
GitLab's Docker executor and the kubelet run them (tests/integration/ci_engines.py
says how each is played with podman, and what the test plays instead of GitHub).

The repository holds `mydriver` (a DKMS tree that builds) and `broken` (one that
does not compile); the build arguments are the README's `--dkms ./mydriver` form
for one kernel and its RT sibling: four cells over two shards. Each engine pulls
dtk's image (`make image`, pushed to an htpasswd registry) with its own kind of
credentials, builds in the repository's copy, keeps the cells in its own cache
repository on that registry, and merges: every shard exits 0 with the failed cells
in its report (they are results), and the merge reports them and exits 1.

The toolkit comes from this machine's storage, read-only (a worker would take it
from the cache: pulling 1-2 GB per job proves nothing more), as in
tests/integration/test_dtk_image.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dtk.cli.main import run_cli
from dtk.distro import aptindex
from dtk.engine import buildah
from dtk.toolkit.images import ToolkitImage
from tests.integration.ci_engines import (
    GitHub,
    GitLab,
    Host,
    Kubelet,
    dockerconfigjson,
    merged_cells,
)
from tests.integration.conftest import AuthRegistry, free_port
from tests.integration.test_dtk_image import private_store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "build"
MODULES = ("dtkhello", "dtkbroken")  # the PACKAGE_NAMEs of mydriver and broken


@dataclass(frozen=True)
class World:
    image: str  # dtk's image, in the htpasswd registry
    registry: AuthRegistry
    repo_url: str  # git:// (git daemon on loopback)
    host: Host
    kernels: tuple[str, str]
    tmp: Path

    def render(self, target: str, *extra: str) -> Any:
        out = self.tmp / f"render-{target}-{uuid.uuid4().hex[:6]}"
        cache = f"{self.registry.address}/dtk-ci-{target}-{uuid.uuid4().hex[:8]}"
        build = ["--dkms", "./mydriver", "--dkms", "./broken",
                 *(a for k in self.kernels for a in ("--kernel", k))]
        assert run_cli(["render", "job", "--shards", "2", "--target", target,
                        "--dtk-image", self.image, "--cache", cache, "-o", str(out),
                        *extra, "--", *build]) == 0
        docs = [yaml.safe_load(p.read_text()) for p in sorted(out.iterdir())]
        return docs[0] if len(docs) == 1 else docs


@pytest.fixture(scope="module")
def dtk_image_pushed(auth_registry: AuthRegistry,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`make image`, pushed to the htpasswd registry (and gone from local storage: each
    engine pulls it)."""
    local = f"localhost/dtk-ci-test-{uuid.uuid4().hex[:8]}:latest"
    subprocess.run(["make", "-C", str(ROOT), "image", f"IMAGE={local}"], check=True,
                   capture_output=True, timeout=1800)
    auth = tmp_path_factory.mktemp("push") / "auth.json"
    auth.write_text(auth_registry.dockerconfigjson())
    remote = f"{auth_registry.address}/dtk:{uuid.uuid4().hex[:8]}"
    try:
        subprocess.run(["skopeo", "copy", "--dest-tls-verify=false", "--dest-authfile",
                        str(auth), f"containers-storage:{local}", f"docker://{remote}"],
                       check=True, capture_output=True, timeout=1800)
    finally:
        buildah.remove_image(local)
    yield remote
    subprocess.run(["podman", "rmi", "-f", remote], capture_output=True, check=False)


@pytest.fixture(scope="module")
def git_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The user's repository, served by `git daemon` on loopback: git://…/drivers.git."""
    base = tmp_path_factory.mktemp("git")
    work = base / "work"
    shutil.copytree(DATA / "dtkhello", work / "mydriver")
    # A driver that does not compile: the compiler's verdict is a result, not a crash.
    broken = shutil.copytree(DATA / "dtkhello", work / "broken")
    conf = broken / "dkms.conf"
    conf.write_text(conf.read_text().replace('PACKAGE_NAME="dtkhello"',
                                             'PACKAGE_NAME="dtkbroken"'))
    with (broken / "dtkhello.c").open("a") as source:
        source.write("\nthis_does_not_compile(;\n")
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git[:3], "init", "-q", "-b", "main"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "drivers"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(base / "drivers.git")],
                   check=True)
    port = free_port()
    daemon = subprocess.Popen(["git", "daemon", "--listen=127.0.0.1", f"--port={port}",
                               f"--base-path={base}", "--export-all", "--reuseaddr",
                               str(base)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
        assert time.monotonic() < deadline and daemon.poll() is None, "git daemon did not start"
        time.sleep(0.1)
    try:
        yield f"git://127.0.0.1:{port}/drivers.git"
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


@pytest.fixture(scope="module")
def world(dtk_image_pushed: str, auth_registry: AuthRegistry, git_repo: str,
          toolkit_612: ToolkitImage, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("ci")
    shared = private_store(tmp / "shared")
    conf = tmp / "storage.conf"
    conf.write_text('[storage]\ndriver = "overlay"\ngraphroot = "/var/lib/containers/storage"\n'
                    'runroot = "/run/containers/storage"\n[storage.options]\n'
                    'additionalimagestores = ["/var/lib/shared"]\n')
    storage = tmp / "storage"
    storage.mkdir()
    apt = Path(os.environ["XDG_CACHE_HOME"]) / "dtk" / "apt"
    # What this machine lends each job (a real one would take the toolkit from the
    # cache): the toolkits, read-only; the session's package index, pinned (conftest).
    host = Host(("-v", f"{shared}:/var/lib/shared:ro",
                 "-v", f"{conf}:/etc/containers/storage.conf:ro",
                 "-v", f"{apt}:/dtk-cache/dtk/apt",
                 "-e", "XDG_CACHE_HOME=/dtk-cache", "-e", "STORAGE_DRIVER=overlay",
                 "-e", f"{aptindex.MAX_AGE_ENV}={os.environ[aptindex.MAX_AGE_ENV]}"))
    assert toolkit_612.rt_kernel
    try:
        yield World(dtk_image_pushed, auth_registry, git_repo, host,
                    (toolkit_612.kernel, toolkit_612.rt_kernel), tmp)
    finally:
        subprocess.run(["umount", str(shared)], check=False)


def _storage(world: World) -> tuple[str, ...]:
    """A job's own container storage (the pod's emptyDir is its own: Kubernetes)."""
    where = world.tmp / "storage" / uuid.uuid4().hex[:8]
    where.mkdir(parents=True)
    return ("-v", f"{where}:/var/lib/containers/storage")


def _expect_the_matrix(output: str, world: World) -> None:
    cells = merged_cells(output, MODULES)
    assert cells == {f"{m}@{k}": ("built" if m == "dtkhello" else "failed")
                     for m in MODULES for k in world.kernels}, output
    assert "2 built, 0 excluded, 2 failed" in output
    assert "dkms build failed" in output  # the compiler's verdict, not a broken dkms.conf


def test_the_github_workflow_runs_as_written(world: World) -> None:
    workflow = world.render("github")
    assert isinstance(workflow, dict)
    engine = GitHub(workflow, world.repo_url, {
        "DTK_REGISTRY_AUTH": world.registry.dockerconfigjson(),
        "DTK_IMAGE_USERNAME": world.registry.user,
        "DTK_IMAGE_PASSWORD": world.registry.password}, _lend(world), world.tmp / "github")
    for shard in (1, 2):
        ran = engine.run("shard", {"shard": shard})
        code, output = ran.step("build this shard")
        assert ran.ok, output[-3000:]  # a shard with a cell that failed to compile
        report = json.loads((world.tmp / "github" / "artifacts" / f"shard-{shard}" /
                             f"shard-{shard}.json").read_text())
        assert {o["status"] for o in report["outcomes"]} <= {"built", "failed"}
    merged = engine.run("merge")
    code, output = merged.step("merge")
    assert code == 1, output  # the merge decides: a cell failed
    _expect_the_matrix(output, world)


def test_the_gitlab_pipeline_runs_as_written(world: World) -> None:
    pipeline = world.render("gitlab")
    assert isinstance(pipeline, dict)
    engine = GitLab(pipeline, world.repo_url,
                    {"DOCKER_AUTH_CONFIG": world.registry.dockerconfigjson()},
                    _lend(world), world.tmp / "gitlab")
    for index in (1, 2):
        [(_name, code, output)] = engine.run("dtk-build-shard", index).steps
        assert code == 0, output[-3000:]
    [(_name, code, output)] = engine.run("dtk-build-merge").steps
    assert code == 1, output
    _expect_the_matrix(output, world)
    # Without clearing dtk's entrypoint, the runner's shell would be dtk's argument.
    del pipeline["dtk-build-merge"]["image"]["entrypoint"]
    [(_name, code, output)] = engine.run("dtk-build-merge").steps
    assert code != 0 and "No such command" in output


def test_the_kubernetes_jobs_run_as_written(world: World) -> None:
    jobs = world.render("kubernetes", "--source-repo", world.repo_url)
    assert isinstance(jobs, list)
    shards_job, merge_job = sorted(jobs, key=lambda j: str(j["metadata"]["name"]))
    config = world.registry.dockerconfigjson()
    kubelet = Kubelet({"dtk-registry": {".dockerconfigjson": config}}, _lend(world),
                      world.tmp / "kubernetes")
    for index in (0, 1):
        ran = kubelet.run(shards_job, index)
        assert [name for name, _c, _o in ran.steps] == ["sources", "dtk"]
        assert ran.ok, ran.steps[-1][2][-3000:]
    ran = kubelet.run(merge_job)
    code, output = ran.step("dtk")
    assert code == 1, output[-3000:]  # podFailurePolicy: FailJob on the verdict
    _expect_the_matrix(output, world)
    # A Secret with other credentials: the kubelet cannot pull dtk's image.
    refused = Kubelet({"dtk-registry": {".dockerconfigjson": dockerconfigjson(
        world.registry.address, world.registry.user, "wrong")}}, _lend(world),
        world.tmp / "kubernetes-refused")
    with pytest.raises(AssertionError, match="podman pull"):
        refused.run(merge_job)


def _lend(world: World) -> Host:
    return Host((*world.host.args, *_storage(world)))


def test_the_documented_wait_reads_a_jobs_end(tmp_path: Path) -> None:
    """The README's `finished` check, its JSONPath evaluated by kubectl itself
    (`--local`: no API server) on rendered Jobs that are running, complete, failed."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("kubectl get \"job/$1\" -o jsonpath='") + len(
        "kubectl get \"job/$1\" -o jsonpath='")
    jsonpath = readme[start:readme.index("'", start)]
    assert shutil.which("kubectl"), "kubectl is needed to check the README's JSONPath"
    assert run_cli(["render", "job", "--shards", "2", "--dtk-image", "r.example/dtk:1",
                    "--cache", "r.example/cache", "-o", str(tmp_path), "--", "--dkms",
                    "acpi-call-dkms", "--kernels", "6.1"]) == 0
    job = yaml.safe_load((tmp_path / "dtk-build-job.yaml").read_text())
    states = {"running": [], "complete": [{"type": "SuccessCriteriaMet", "status": "True"},
                                          {"type": "Complete", "status": "True"}],
              "failed": [{"type": "FailureTarget", "status": "True"},
                         {"type": "Failed", "status": "True", "reason": "FailedIndexes"}]}
    for state, conditions in states.items():
        path = tmp_path / f"{state}.yaml"
        path.write_text(yaml.safe_dump({**job, "status": {"conditions": conditions}}))
        words = subprocess.run(["kubectl", "label", "--local", "-f", str(path), "x=y",
                                "-o", f"jsonpath={jsonpath}"], capture_output=True,
                               text=True, check=True).stdout
        finished = subprocess.run(["grep", "-qwE", "Complete|Failed"], input=words,
                                  text=True, check=False).returncode == 0
        assert finished == (state != "running"), (state, words)
