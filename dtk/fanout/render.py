"""One `dtk build` over N workers, as the engines people already run: a Kubernetes
Indexed Job, a GitHub Actions workflow, a GitLab CI pipeline. Pure: dicts to dump.

Every worker runs the user's own `dtk build` arguments with `--shard I/N --cache
REPO --json`; the split needs no coordinator (`dtk.driver.shard`) and the cache
makes a retried or repeated worker cheap. The arguments reach dtk as separate
argv entries (`sh -c '… "$@"' dtk ARGS…`), never pasted into a shell line.
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
# The names dtk adds itself; the user's arguments may not set them.
_OWN = ("--shard", "--cache", "--json", "--plan", "--dry-run")


class Target(enum.StrEnum):
    KUBERNETES = "kubernetes"
    GITHUB = "github"
    GITLAB = "gitlab"


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
        if len(self.registry_secret) > 253 or not _SUBDOMAIN.match(self.registry_secret):
            raise DtkError(f"--registry-secret '{self.registry_secret}' is not a DNS-1123 "
                           "subdomain")
        if not self.dtk_image or any(c.isspace() for c in self.dtk_image) \
                or self.dtk_image.startswith("-"):
            raise DtkError(f"--dtk-image '{self.dtk_image}' is not an image reference")
        own = [a for a in self.build_args if a.split("=", 1)[0] in _OWN]
        if own:
            raise DtkError(f"{own[0]} is set by the rendered job itself",
                           hint="leave --shard, --cache, --json, --plan and --dry-run out "
                                "of the build arguments")


def _shell_args(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def kubernetes(spec: FanOut) -> list[dict[str, Any]]:
    """The Indexed Job of the shards, then the Job that collects the whole matrix's
    result from the cache (apply it once the first has completed: `kubectl wait`)."""
    # JOB_COMPLETION_INDEX counts from 0; dtk's shards from 1.
    shards = ('exec dtk build "$@" --shard "$((JOB_COMPLETION_INDEX + 1))/'
              f'{spec.shards}" --cache {shlex.quote(spec.cache)} --json')
    merge = f'exec dtk build "$@" --cache {shlex.quote(spec.cache)}'
    job = _job(spec, spec.name, shards, "shards")
    job["spec"].update(completionMode="Indexed", completions=spec.shards,
                       parallelism=spec.shards, backoffLimitPerIndex=1,
                       maxFailedIndexes=spec.shards)
    return [job, _job(spec, f"{spec.name}-merge", merge, "merge")]


def _job(spec: FanOut, name: str, script: str, component: str) -> dict[str, Any]:
    labels = {"app.kubernetes.io/name": "dtk", "app.kubernetes.io/instance": spec.name,
              "app.kubernetes.io/component": component}
    container = {
        "name": "dtk", "image": spec.dtk_image,
        "command": [_kube(a) for a in ("/bin/sh", "-c", script, "dtk", *spec.build_args)],
        "env": [{"name": "REGISTRY_AUTH_FILE", "value": AUTH_FILE}],
        # buildah builds inside the pod (its own storage on the emptyDir), as KMM's
        # in-cluster build pods do; chroot isolation needs the privileges to mount.
        "securityContext": {"privileged": True},
        "volumeMounts": [{"name": "registry", "mountPath": AUTH_DIR, "readOnly": True},
                         {"name": "storage", "mountPath": "/var/lib/containers"}],
    }
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": spec.namespace, "labels": labels},
        "spec": {"backoffLimit": 2, "template": {
            "metadata": {"labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [container], "volumes": [
                {"name": "registry", "secret": {
                    "secretName": spec.registry_secret,
                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}},
                {"name": "storage", "emptyDir": {}}]}}},
    }


def _kube(text: str) -> str:
    """Kubernetes expands $(VAR) in a container's command and reduces $$ to $: every
    $ doubled reaches the shell as written."""
    return text.replace("$", "$$")


def github(spec: FanOut) -> dict[str, Any]:
    """A workflow: a matrix job per shard, each keeping its JSON as an artifact, and a
    job that merges them (also when a shard failed: failures are results too)."""
    auth = ('printf %s "$DTK_REGISTRY_AUTH" > "$RUNNER_TEMP/auth.json"\n'
            'echo "REGISTRY_AUTH_FILE=$RUNNER_TEMP/auth.json" >> "$GITHUB_ENV"')
    container = {"image": spec.dtk_image, "options": "--privileged"}
    env = {"DTK_REGISTRY_AUTH": "${{ secrets.DTK_REGISTRY_AUTH }}"}
    shard = "${{ matrix.shard }}"
    build = (f"dtk build {_shell_args(spec.build_args)} --shard {shard}/{spec.shards} "
             f"--cache {shlex.quote(spec.cache)} --json > shard-{shard}.json")
    return {
        "name": spec.name, "on": {"workflow_dispatch": {}},
        "jobs": {
            "shard": {
                "runs-on": "ubuntu-latest", "container": container, "env": env,
                "strategy": {"fail-fast": False,
                             "matrix": {"shard": list(range(1, spec.shards + 1))}},
                "steps": [{"name": "registry credentials", "run": auth},
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


def gitlab(spec: FanOut) -> dict[str, Any]:
    """A pipeline: `parallel: N` (CI_NODE_INDEX counts from 1, as dtk's shards do)
    and a merge job in the next stage."""
    auth = ('printf %s "$DTK_REGISTRY_AUTH" > "$CI_PROJECT_DIR/.auth.json"; '
            'export REGISTRY_AUTH_FILE="$CI_PROJECT_DIR/.auth.json"')
    # GitLab runs `parallel` jobs only for 2..200 of them.
    index = '"$CI_NODE_INDEX"' if spec.shards > 1 else "1"
    build = (f"dtk build {_shell_args(spec.build_args)} --shard {index}/{spec.shards} "
             f"--cache {shlex.quote(spec.cache)} --json > shard-{index}.json")
    shard_job: dict[str, Any] = {
        "stage": "build", "image": spec.dtk_image, "script": [auth, build],
        "artifacts": {"when": "always", "paths": ["shard-*.json"]}}
    if spec.shards > 1:
        shard_job["parallel"] = spec.shards
    return {
        "stages": ["build", "merge"],
        f"{spec.name}-shard": shard_job,
        f"{spec.name}-merge": {
            "stage": "merge", "image": spec.dtk_image, "when": "always",
            "needs": [f"{spec.name}-shard"],
            "script": ["dtk report merge shard-*.json"]},
    }
