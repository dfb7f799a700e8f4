"""The engines `dtk render job` writes for, played with podman as they run their jobs
(no GitHub, GitLab or Kubernetes service runs here). Only what the rendered files use
is played, and anything else they might say is refused, so that a file using more
than this knows fails its test instead of passing untried:

- GitHub Actions' runner (actions/runner, a container job): one container per job
  (`tail -f /dev/null` as its entrypoint, the workspace at /__w/REPO/REPO, $HOME at
  /github/home), each `run:` step written to a file under $RUNNER_TEMP and run by
  `bash --noprofile --norc -e -o pipefail FILE` in it (`sh -e` without bash), the
  job's `env`, $GITHUB_ENV read back after each step; `${{ matrix.* }}`,
  `${{ secrets.* }}` (an unset one is empty) and `${{ !cancelled() }}`. The image is
  pulled after a login with `container.credentials` (none when either is empty, as
  the runner does). The `uses:` steps are JavaScript actions fetched from GitHub:
  here checkout is a `git clone` into the workspace and the artifact actions a
  directory per artifact.
- GitLab's Docker executor: the project cloned into /builds/GROUP/PROJECT (the
  working directory), the job's image pulled with DOCKER_AUTH_CONFIG, run with its
  entrypoint as the job sets it (the image's own unless `image.entrypoint` says
  otherwise) and the runner's shell detection as its command, the script (`set -eo
  pipefail`, then each line) on its stdin; CI_NODE_INDEX/CI_NODE_TOTAL for
  `parallel`; artifacts copied out after the job (`when: always`) and into the jobs
  that `need` it.
- The kubelet, for one pod of a Job: the image pulled with the pod's
  imagePullSecrets, `emptyDir` and `secret` volumes as directories, the init
  containers run to completion first, then the container; `$(VAR)` in a command
  expanded from the container's environment and `$$` reduced to `$`, as Kubernetes
  does; JOB_COMPLETION_INDEX set for an Indexed Job, as the Job controller does.

Every container also gets `host` arguments: what this machine lends a job that a
real one would fetch (its toolkits read-only, the session's package index).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PODMAN = ["podman", "--runtime", "runc"]
# runc instead of crun, and ulimits within the hard limits: what podman needs here.
RUN = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--network", "host"]
TIMEOUT = 1800


@dataclass(frozen=True)
class Host:
    """What every job's container gets from this machine (podman arguments)."""

    args: tuple[str, ...]
    registry_tls: bool = False  # the registry here is a loopback one, plain HTTP


@dataclass
class Ran:
    """A job's or pod's steps: (name, exit status, output) each."""

    steps: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(code == 0 for _n, code, _o in self.steps)

    def step(self, name: str) -> tuple[int, str]:
        for step_name, code, output in self.steps:
            if step_name == name:
                return code, output
        raise KeyError(f"no step {name!r} ran: {[n for n, _c, _o in self.steps]}")


def _podman(*args: str, stdin: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*PODMAN, *args], input=stdin, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:3])}… failed:\n{proc.stderr[-3000:]}")
    return proc


def pull(image: str, authfile: Path | None) -> None:
    """What an engine does before it starts a job: pull the image, with credentials."""
    _podman("pull", "-q", "--tls-verify=false",
            *(["--authfile", str(authfile)] if authfile else []), image)


def login_file(tmp: Path, registry: str, username: str, password: str) -> Path | None:
    """The runner's `docker login` with container.credentials: none when either is empty."""
    if not username or not password:
        return None
    auth = tmp / f"login-{uuid.uuid4().hex[:8]}.json"
    _podman("login", "--tls-verify=false", "--authfile", str(auth), "-u", username,
            "--password-stdin", registry, stdin=password)
    return auth


# --- GitHub Actions ----------------------------------------------------------------

_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def _evaluate(text: str, matrix: Mapping[str, Any], secrets: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        expr = match[1]
        if expr.startswith("matrix."):
            return str(matrix[expr.removeprefix("matrix.")])
        if expr.startswith("secrets."):
            return secrets.get(expr.removeprefix("secrets."), "")
        if expr == "!cancelled()":
            return "true"
        raise AssertionError(f"the runner played here does not know ${{{{ {expr} }}}}")
    return _EXPR.sub(value, text)


def _github_env(text: str) -> dict[str, str]:
    """$GITHUB_ENV's NAME=value lines (and NAME<<DELIMITER blocks)."""
    out: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block = []
            for inner in lines:
                if inner == delimiter:
                    break
                block.append(inner)
            out[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            out[name] = value
    return out


@dataclass(frozen=True)
class GitHub:
    """A workflow's jobs, run as the runner runs a container job."""

    workflow: dict[str, Any]
    repo_url: str  # what actions/checkout would check out
    secrets: Mapping[str, str]
    host: Host
    root: Path  # the runner's work directory, artifacts and temporary files

    def run(self, job_id: str, matrix: Mapping[str, Any] | None = None) -> Ran:
        job = self.workflow["jobs"][job_id]
        matrix = matrix or {}
        tag = uuid.uuid4().hex[:8]
        work = self.root / f"work-{job_id}-{tag}"
        workspace = work / "repo" / "repo"
        temp = work / "_temp"
        home = temp / "_github_home"
        for path in (workspace, temp / "_runner_file_commands", home):
            path.mkdir(parents=True)
        container = job["container"]
        credentials = {k: _evaluate(v, matrix, self.secrets)
                       for k, v in container.get("credentials", {}).items()}
        image = container["image"]
        pull(image, login_file(self.root, image.split("/", 1)[0],
                               credentials.get("username", ""),
                               credentials.get("password", "")))
        env = {k: _evaluate(v, matrix, self.secrets) for k, v in job.get("env", {}).items()}
        options = container.get("options", "").split()
        cid = _podman("create", *RUN, *options, *self.host.args,
                      "-v", f"{work}:/__w", "-v", f"{home}:/github/home",
                      "-e", "HOME=/github/home", "-w", "/__w/repo/repo",
                      "--entrypoint", "tail", image, "-f", "/dev/null").stdout.strip()
        ran = Ran()
        try:
            _podman("start", cid)
            for index, step in enumerate(job["steps"]):
                condition = _evaluate(step.get("if", "${{ success() }}")
                                      if "if" in step else "", matrix, self.secrets)
                if not ran.ok and condition != "true":
                    continue  # success() is the default: a failed step stops the rest
                name = step.get("name") or step.get("uses") or f"step {index}"
                if "uses" in step:
                    ran.steps.append((name, *self._action(step, workspace, matrix)))
                else:
                    ran.steps.append((name, *self._run_step(cid, step, env, temp, matrix)))
        finally:
            _podman("rm", "-f", "-t", "0", cid, check=False)
        return ran

    def _run_step(self, cid: str, step: Mapping[str, Any], env: dict[str, str], temp: Path,
                  matrix: Mapping[str, Any]) -> tuple[int, str]:
        script = temp / f"{uuid.uuid4()}.sh"
        script.write_text(_evaluate(step["run"], matrix, self.secrets))
        env_file = temp / "_runner_file_commands" / f"set_env_{uuid.uuid4()}"
        env_file.write_text("")
        inside = f"/__w/_temp/{script.name}"
        shell = ("bash --noprofile --norc -e -o pipefail" if _podman(
            "exec", cid, "sh", "-c", "command -v bash", check=False).returncode == 0
            else "sh -e")
        variables = {**env, "CI": "true", "GITHUB_ACTIONS": "true",
                     "GITHUB_WORKSPACE": "/__w/repo/repo", "RUNNER_TEMP": "/__w/_temp",
                     "GITHUB_ENV": f"/__w/_temp/_runner_file_commands/{env_file.name}"}
        proc = _podman("exec", "-w", "/__w/repo/repo",
                       *(a for k, v in variables.items() for a in ("-e", f"{k}={v}")),
                       cid, *shell.split(), inside, check=False)
        env.update(_github_env(env_file.read_text()))
        return proc.returncode, proc.stdout + proc.stderr

    def _action(self, step: Mapping[str, Any], workspace: Path,
                matrix: Mapping[str, Any]) -> tuple[int, str]:
        action = step["uses"].split("@", 1)[0]
        given = {k: _evaluate(str(v), matrix, self.secrets)
                 for k, v in step.get("with", {}).items()}
        store = self.root / "artifacts"
        if action == "actions/checkout" and not given:
            proc = subprocess.run(["git", "clone", "-q", self.repo_url, str(workspace)],
                                  capture_output=True, text=True, check=False)
            return proc.returncode, proc.stderr
        if action == "actions/upload-artifact" and set(given) == {"name", "path"}:
            (store / given["name"]).mkdir(parents=True)
            shutil.copy(workspace / given["path"], store / given["name"])
            return 0, ""
        if action == "actions/download-artifact" and set(given) == {"pattern",
                                                                    "merge-multiple"}:
            assert given["merge-multiple"] == "True"
            for artifact in sorted(store.iterdir()):
                if fnmatch.fnmatch(artifact.name, given["pattern"]):
                    for file in artifact.iterdir():
                        shutil.copy(file, workspace)
            return 0, ""
        raise AssertionError(f"the runner played here does not know {step}")


# --- GitLab CI ---------------------------------------------------------------------

# The Docker executor's shell detection (its container's command; the script is sent
# to that shell's stdin).
_DETECT = ("if [ -x /usr/local/bin/bash ]; then exec /usr/local/bin/bash; "
           "elif [ -x /usr/bin/bash ]; then exec /usr/bin/bash; "
           "elif [ -x /bin/bash ]; then exec /bin/bash; "
           "elif [ -x /bin/sh ]; then exec /bin/sh; "
           "else echo shell not found; exit 1; fi")


@dataclass(frozen=True)
class GitLab:
    """A pipeline's jobs, run as the Docker executor runs them."""

    pipeline: dict[str, Any]
    repo_url: str
    variables: Mapping[str, str]  # CI/CD variables: DOCKER_AUTH_CONFIG
    host: Host
    root: Path
    project: str = "/builds/dtk/drivers"

    def run(self, name: str, node_index: int | None = None) -> Ran:
        job = self.pipeline[name]
        known = {"stage", "image", "script", "artifacts", "parallel", "needs", "when"}
        assert set(job) <= known, f"the runner played here does not know {set(job) - known}"
        tag = f"{name}-{node_index or 0}-{uuid.uuid4().hex[:6]}"
        project = self.root / "builds" / tag
        subprocess.run(["git", "clone", "-q", self.repo_url, str(project)], check=True)
        for needed in job.get("needs", []):  # artifacts of the jobs it needs
            for kept in sorted((self.root / "artifacts").glob(f"{needed}-*/*")):
                shutil.copy(kept, project)
        image = job["image"]["name"] if isinstance(job["image"], dict) else job["image"]
        auth = self.root / f"docker-auth-{tag}.json"
        auth.write_text(self.variables.get("DOCKER_AUTH_CONFIG", "{}"))
        pull(image, auth)
        entrypoint = []
        if isinstance(job["image"], dict) and "entrypoint" in job["image"]:
            entrypoint = ["--entrypoint", json.dumps(job["image"]["entrypoint"])
                          if job["image"]["entrypoint"] != [""] else ""]
        variables = {**self.variables, "CI": "true", "GITLAB_CI": "true",
                     "CI_PROJECT_DIR": self.project}
        if node_index is not None:
            variables.update(CI_NODE_INDEX=str(node_index),
                             CI_NODE_TOTAL=str(job["parallel"]))
        script = "set -eo pipefail\n" + "\n".join(job["script"]) + "\n"
        proc = _podman("run", "--rm", "-i", *RUN, "--privileged", *self.host.args,
                       "-v", f"{project}:{self.project}", "-w", self.project,
                       *(a for k, v in variables.items() for a in ("-e", f"{k}={v}")),
                       *entrypoint, image, "sh", "-c", _DETECT, stdin=script, check=False)
        artifacts = job.get("artifacts")
        if artifacts and (proc.returncode == 0 or artifacts.get("when") == "always"):
            keep = self.root / "artifacts" / tag
            keep.mkdir(parents=True)
            for pattern in artifacts["paths"]:
                for found in project.glob(pattern):
                    shutil.copy(found, keep)
        return Ran([(name, proc.returncode, proc.stdout + proc.stderr)])


# --- Kubernetes ----------------------------------------------------------------------

_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' expansion of a container's command: $(VAR) from its environment
    (left as written when VAR is not defined), $$ to $."""
    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match[1], match[0])
    return _REF.sub(one, text)


@dataclass(frozen=True)
class Kubelet:
    """One pod of a Job, run as the kubelet runs it."""

    secrets: Mapping[str, Mapping[str, str]]  # name -> key -> value (decoded)
    host: Host
    root: Path

    def run(self, job: Mapping[str, Any], index: int | None = None) -> Ran:
        pod = job["spec"]["template"]["spec"]
        known = {"restartPolicy", "imagePullSecrets", "containers", "initContainers",
                 "volumes"}
        assert set(pod) <= known, f"the kubelet played here does not know {set(pod) - known}"
        tag = uuid.uuid4().hex[:8]
        volumes = {v["name"]: self._volume(v, tag) for v in pod["volumes"]}
        auth = self.root / f"pull-{tag}.json"
        [pull_secret] = pod["imagePullSecrets"]
        auth.write_text(self.secrets[pull_secret["name"]][".dockerconfigjson"])
        ran = Ran()
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            pull(container["image"], auth)
            code, output = self._container(container, volumes, job, index)
            ran.steps.append((container["name"], code, output))
            if code != 0:
                break  # an init container that fails stops the pod
        return ran

    def _volume(self, volume: Mapping[str, Any], tag: str) -> Path:
        where: Path = self.root / "volumes" / tag / str(volume["name"])
        where.mkdir(parents=True)
        if "emptyDir" in volume:
            return where
        secret = volume["secret"]
        data = self.secrets[secret["secretName"]]
        for item in secret.get("items", [{"key": k, "path": k} for k in data]):
            (where / item["path"]).write_text(data[item["key"]])
        return where

    def _container(self, container: Mapping[str, Any], volumes: Mapping[str, Path],
                   job: Mapping[str, Any], index: int | None) -> tuple[int, str]:
        known = {"name", "image", "command", "env", "securityContext", "volumeMounts",
                 "workingDir"}
        assert set(container) <= known, f"not played here: {set(container) - known}"
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        if job["spec"].get("completionMode") == "Indexed":
            env["JOB_COMPLETION_INDEX"] = str(index)
        command = [expand(part, env) for part in container["command"]]
        mounts = [a for m in container.get("volumeMounts", [])
                  for a in ("-v", f"{volumes[m['name']]}:{m['mountPath']}"
                            + (":ro" if m.get("readOnly") else ""))]
        privileged = container.get("securityContext", {}).get("privileged", False)
        proc = _podman("run", "--rm", *RUN, *(["--privileged"] if privileged else []),
                       *self.host.args, *mounts,
                       *(["-w", container["workingDir"]] if "workingDir" in container else []),
                       *(a for k, v in env.items() for a in ("-e", f"{k}={v}")),
                       "--entrypoint", command[0], container["image"], *command[1:],
                       check=False)
        return proc.returncode, proc.stdout + proc.stderr


def dockerconfigjson(registry: str, user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return json.dumps({"auths": {registry: {"auth": token}}})


def merged_cells(output: str, modules: Sequence[str]) -> dict[str, str]:
    """module@kernel -> status, from a merge's table (dtk build's columns; the table
    ends at its first blank line)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("MODULE "))
    found = {}
    for line in lines[start + 2:]:
        if not line.strip():
            break
        words = line.split()
        if words[0] in modules:
            found[f"{words[0]}@{words[1]}"] = words[2]
    return found
