"""One `dtk build` over N workers, as the engines people already run: a Kubernetes
Indexed Job, a GitHub Actions workflow, a GitLab CI pipeline. Pure: dicts to dump.

Every worker runs the user's own `dtk build` arguments with `--shard I/N --cache
REPO --json --exit-zero`; the split needs no coordinator (`dtk.driver.shard`) and
the cache makes a retried or repeated worker cheap. A cell that fails to compile
is a result, not a failed worker: the shard exits 0 with it in its report and the
merge decides; a worker fails only when something other than a cell's inputs did
(a full disk, a registry, dtk itself), which is what the engine's retry is for.
The arguments reach dtk as separate argv entries (`sh -c '… "$@"' dtk ARGS…`),
never pasted into a shell line.

Where the sources come from: GitHub checks the repository out (`actions/checkout`),
GitLab clones it before the job starts; a Kubernetes pod gets them from an init
container that fetches one revision of a Git repository into an `emptyDir` the
build container starts in, as Tekton's git-clone task and Argo's Git artifacts do
(sources baked into `--dtk-image` and named by absolute path need nothing).
"""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dtk.errors import DtkError

# Kubernetes' own rules (apimachinery validation): a DNS-1123 label for Job names
# and namespaces, a DNS-1123 subdomain for Secret names.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Where the registry Secret is mounted, as KMM mounts a Module's imageRepoSecret for
# its build pods: the .dockerconfigjson key as a docker config file, which skopeo
# and buildah read through REGISTRY_AUTH_FILE.
AUTH_DIR = "/run/secrets/dtk-registry"
AUTH_FILE = f"{AUTH_DIR}/config.json"
# The pod's copy of the sources, and where git's credential store is mounted.
WORKSPACE = "/workspace"
SOURCES_DIR = f"{WORKSPACE}/src"
GIT_AUTH_DIR = "/run/secrets/dtk-git"
GIT_CREDENTIALS = f"{GIT_AUTH_DIR}/.git-credentials"
# The names dtk adds itself; the user's arguments may not set them.
_OWN = ("--shard", "--cache", "--json", "--plan", "--dry-run", "--exit-zero")
# dtk's exit status for a refused argument or input (dtk.cli.main): the same on a retry.
USAGE_EXIT = 2
# A Git revision as `git fetch` takes it: a branch, a tag, a commit; never an option.
_REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/+@-]*$")


class Target(enum.StrEnum):
    KUBERNETES = "kubernetes"
    GITHUB = "github"
    GITLAB = "gitlab"


@dataclass(frozen=True)
class Sources:
    """A Git repository each pod fetches one revision of (Kubernetes only)."""

    repo: str
    revision: str = "HEAD"
    secret: str = ""  # a Secret with git's credential store, `.git-credentials`

    def __post_init__(self) -> None:
        if not self.repo or self.repo.startswith("-") or any(c.isspace() for c in self.repo):
            raise DtkError(f"--source-repo '{self.repo}' is not a Git repository URL",
                           hint="e.g. --source-repo https://git.example.com/team/drivers.git")
        if not _REVISION.match(self.revision) or ".." in self.revision:
            raise DtkError(f"--source-revision '{self.revision}' is not a branch, tag or "
                           "commit", hint="e.g. --source-revision main, v1.2 or a commit id")
        if self.secret and (len(self.secret) > 253 or not _SUBDOMAIN.match(self.secret)):
            raise DtkError(f"--source-secret '{self.secret}' is not a DNS-1123 subdomain")


@dataclass(frozen=True)
class FanOut:
    """What every rendered file says: who runs what, split how, cached where."""

    shards: int
    dtk_image: str
    cache: str
    build_args: tuple[str, ...]
    name: str = "dtk-build"
    namespace: str = "default"
    registry_secret: str = "dtk-registry"  # noqa: S105 (a Secret's name, not its value)
    pull_secret: str = ""  # for --dtk-image; default: registry_secret
    sources: Sources | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.shards <= 200:  # GitLab's limit for parallel jobs
            raise DtkError(f"--shards {self.shards} is not between 1 and 200")
        # "-merge" is appended for the merge Job; a Job's name must leave room for the
        # pod name suffixes Kubernetes adds (it allows 63 characters).
        if len(self.name) > 40 or not _LABEL.match(self.name):
            raise DtkError(f"--name '{self.name}' is not a DNS-1123 label of at most 40 "
                           "characters", hint="lower-case letters, digits and '-'")
        if len(self.namespace) > 63 or not _LABEL.match(self.namespace):
            raise DtkError(f"--namespace '{self.namespace}' is not a DNS-1123 label")
        for option, secret in (("--registry-secret", self.registry_secret),
                               ("--pull-secret", self.pull_secret or self.registry_secret)):
            if len(secret) > 253 or not _SUBDOMAIN.match(secret):
                raise DtkError(f"{option} '{secret}' is not a DNS-1123 subdomain")
        if not self.dtk_image or any(c.isspace() for c in self.dtk_image) \
                or self.dtk_image.startswith("-"):
            raise DtkError(f"--dtk-image '{self.dtk_image}' is not an image reference")
        own = [a for a in self.build_args if a.split("=", 1)[0] in _OWN]
        if own:
            raise DtkError(f"{own[0]} is set by the rendered job itself",
                           hint="leave --shard, --cache, --json, --plan, --dry-run and "
                                "--exit-zero out of the build arguments")


def _shell_args(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def kubernetes(spec: FanOut) -> list[dict[str, Any]]:
    """The Indexed Job of the shards, then the Job that collects the whole matrix's
    result from the cache (apply it once the first has finished)."""
    # JOB_COMPLETION_INDEX counts from 0; dtk's shards from 1.
    shards = ('exec dtk build "$@" --shard "$((JOB_COMPLETION_INDEX + 1))/'
              f'{spec.shards}" --cache {shlex.quote(spec.cache)} --json --exit-zero')
    merge = f'exec dtk build "$@" --cache {shlex.quote(spec.cache)}'
    job = _job(spec, spec.name, shards, "shards")
    # A shard whose arguments dtk refused fails alone and at once (a retry would be
    # refused the same way); a pod evicted or preempted is not its fault and does
    # not count; anything else is retried once, on its own (backoffLimitPerIndex).
    # backoffLimit is left out: beside backoffLimitPerIndex it caps every index's
    # retries together (its default there is unlimited).
    job["spec"].update(completionMode="Indexed", completions=spec.shards,
                       parallelism=spec.shards, backoffLimitPerIndex=1,
                       maxFailedIndexes=spec.shards,
                       podFailurePolicy={"rules": [_on_exit("FailIndex", USAGE_EXIT),
                                                   _DISRUPTION]})
    merged = _job(spec, f"{spec.name}-merge", merge, "merge")
    # The merge's exit 1 is the matrix's verdict (a cell failed), 2 its arguments'
    # refusal: neither changes on a retry. A crash is retried, up to twice.
    merged["spec"].update(backoffLimit=2, podFailurePolicy={"rules": [
        _on_exit("FailJob", 1, USAGE_EXIT), _DISRUPTION]})
    return [job, merged]


_DISRUPTION = {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}


def _on_exit(action: str, *codes: int) -> dict[str, Any]:
    return {"action": action,
            "onExitCodes": {"containerName": "dtk", "operator": "In", "values": list(codes)}}


def _job(spec: FanOut, name: str, script: str, component: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "dtk", "app.kubernetes.io/instance": spec.name,
              "app.kubernetes.io/component": component}
    mounts = [{"name": "registry", "mountPath": AUTH_DIR, "readOnly": True},
              {"name": "storage", "mountPath": "/var/lib/containers"}]
    container: dict[str, Any] = {
        "name": "dtk", "image": spec.dtk_image,
        "command": [_kube(a) for a in ("/bin/sh", "-c", script, "dtk", *spec.build_args)],
        "env": [{"name": "REGISTRY_AUTH_FILE", "value": AUTH_FILE}],
        # buildah builds inside the pod (its own storage on the emptyDir), as KMM's
        # in-cluster build pods do; chroot isolation needs the privileges to mount.
        "securityContext": {"privileged": True},
        "volumeMounts": mounts,
    }
    volumes: list[dict[str, Any]] = [
        {"name": "registry", "secret": {"secretName": spec.registry_secret,
                                        "items": [{"key": ".dockerconfigjson",
                                                   "path": "config.json"}]}},
        {"name": "storage", "emptyDir": {}}]
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        # dtk's image is pulled with the registry's credentials (or --pull-secret's).
        "imagePullSecrets": [{"name": spec.pull_secret or spec.registry_secret}],
        "containers": [container], "volumes": volumes}
    if spec.sources is not None:
        init, extra = _fetch_sources(spec.dtk_image, spec.sources)
        pod["initContainers"] = [init]
        volumes += extra
        mounts.append({"name": "workspace", "mountPath": WORKSPACE})
        container["workingDir"] = SOURCES_DIR
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": labels},
        "spec": {"template": {"metadata": {"labels": labels}, "spec": pod}},
    }


def _fetch_sources(image: str, sources: Sources) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The init container that fetches one revision of the repository (shallow: only
    that commit's files) into the workspace, and the volumes it needs. A branch, a
    tag and a commit id are all fetched the same way; the URL and revision are
    arguments, never part of the script."""
    helper = (f'git config credential.helper "store --file={GIT_CREDENTIALS}"\n'
              if sources.secret else "")
    script = (f"set -e\ngit init -q {SOURCES_DIR}\ncd {SOURCES_DIR}\n{helper}"
              'git remote add origin "$1"\ngit fetch -q --depth 1 origin "$2"\n'
              "git checkout -q FETCH_HEAD\n")
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": WORKSPACE}]
    volumes: list[dict[str, Any]] = [{"name": "workspace", "emptyDir": {}}]
    if sources.secret:
        mounts.append({"name": "git", "mountPath": GIT_AUTH_DIR, "readOnly": True})
        volumes.append({"name": "git", "secret": {
            "secretName": sources.secret,
            "items": [{"key": ".git-credentials", "path": ".git-credentials"}]}})
    init = {"name": "sources", "image": image,
            "command": [_kube(a) for a in ("/bin/sh", "-c", script, "sources", sources.repo,
                                           sources.revision)],
            "volumeMounts": mounts}
    return init, volumes


def _kube(text: str) -> str:
    """Kubernetes expands $(VAR) in a container's command and reduces $$ to $: every
    $ doubled reaches the shell as written."""
    return text.replace("$", "$$")


GITHUB_AUTH = ('if [ -n "$DTK_REGISTRY_AUTH" ]; then\n'
               '  printf %s "$DTK_REGISTRY_AUTH" > "$RUNNER_TEMP/auth.json"\n'
               '  echo "REGISTRY_AUTH_FILE=$RUNNER_TEMP/auth.json" >> "$GITHUB_ENV"\nfi\n')


def github(spec: FanOut) -> dict[str, Any]:
    """A workflow: a matrix job per shard on the repository's checkout, each keeping its
    JSON as an artifact, and a job that merges them (also when a shard failed). The
    runner pulls --dtk-image with the DTK_IMAGE_USERNAME/_PASSWORD secrets (none set:
    an anonymous pull, or on ghcr.io the workflow's own token); dtk reaches its
    registries with the DTK_REGISTRY_AUTH secret (an auth.json)."""
    container = {"image": spec.dtk_image, "options": "--privileged",
                 "credentials": {"username": "${{ secrets.DTK_IMAGE_USERNAME }}",
                                 "password": "${{ secrets.DTK_IMAGE_PASSWORD }}"}}
    env = {"DTK_REGISTRY_AUTH": "${{ secrets.DTK_REGISTRY_AUTH }}"}
    shard = "${{ matrix.shard }}"
    build = (f"dtk build {_shell_args(spec.build_args)} --shard {shard}/{spec.shards} "
             f"--cache {shlex.quote(spec.cache)} --json --exit-zero > shard-{shard}.json")
    return {
        "name": spec.name, "on": {"workflow_dispatch": {}},
        # checkout reads the repository; a ghcr.io --dtk-image is pulled with the token
        "permissions": {"contents": "read", "packages": "read"},
        "jobs": {
            "shard": {
                "runs-on": "ubuntu-latest", "container": container, "env": env,
                "strategy": {"fail-fast": False,
                             "matrix": {"shard": list(range(1, spec.shards + 1))}},
                "steps": [{"uses": "actions/checkout@v4"},
                          {"name": "registry credentials", "run": GITHUB_AUTH},
                          {"name": "build this shard", "run": build},
                          {"uses": "actions/upload-artifact@v4", "if": "${{ !cancelled() }}",
                           "with": {"name": f"shard-{shard}", "path": f"shard-{shard}.json"}}]},
            "merge": {
                "runs-on": "ubuntu-latest", "container": container, "needs": "shard",
                "if": "${{ !cancelled() }}",
                "steps": [{"uses": "actions/download-artifact@v4",
                           "with": {"pattern": "shard-*", "merge-multiple": True}},
                          {"name": "merge", "run": "dtk report merge shard-*.json"}]},
        },
    }


# GitLab's runner pulls the job's image with DOCKER_AUTH_CONFIG (a CI/CD variable
# holding a docker config.json); dtk reads the same file for its registries.
GITLAB_AUTH = ('if [ -n "$DOCKER_AUTH_CONFIG" ]; then export REGISTRY_AUTH_FILE="$(mktemp)"; '
               'printf %s "$DOCKER_AUTH_CONFIG" > "$REGISTRY_AUTH_FILE"; fi')


def gitlab(spec: FanOut) -> dict[str, Any]:
    """A pipeline: `parallel: N` (CI_NODE_INDEX counts from 1, as dtk's shards do)
    and a merge job in the next stage. dtk's image has `dtk` as its entrypoint, which
    the runner would hand the job's shell to: the jobs clear it."""
    # GitLab runs `parallel` jobs only for 2..200 of them.
    index = '"$CI_NODE_INDEX"' if spec.shards > 1 else "1"
    build = (f"dtk build {_shell_args(spec.build_args)} --shard {index}/{spec.shards} "
             f"--cache {shlex.quote(spec.cache)} --json --exit-zero > shard-{index}.json")
    image = {"name": spec.dtk_image, "entrypoint": [""]}
    shard_job: dict[str, Any] = {
        "stage": "build", "image": image, "script": [GITLAB_AUTH, build],
        "artifacts": {"when": "always", "paths": ["shard-*.json"]}}
    if spec.shards > 1:
        shard_job["parallel"] = spec.shards
    return {
        "stages": ["build", "merge"],
        f"{spec.name}-shard": shard_job,
        f"{spec.name}-merge": {
            "stage": "merge", "image": image, "when": "always",
            "needs": [f"{spec.name}-shard"],
            "script": ["dtk report merge shard-*.json"]},
    }
