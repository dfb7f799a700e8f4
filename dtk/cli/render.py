"""`dtk render job`: the files that run one `dtk build` over N workers."""

from __future__ import annotations

from pathlib import Path

import click
import yaml

from dtk.cli.buildreq import BuildRequest
from dtk.cli.common import json_option, print_json, say
from dtk.cli.driver import request_from_args
from dtk.driver.remotecache import check_repo
from dtk.errors import DtkError
from dtk.fanout.render import FanOut, Sources, Target, github, gitlab, kubernetes
from dtk.files import write_atomic


@click.group("render")
def render_group() -> None:
    """Files that run dtk elsewhere: Kubernetes Jobs, CI pipelines."""


@render_group.command("job", context_settings={"ignore_unknown_options": False})
@click.option("--shards", type=click.IntRange(1, 200), required=True,
              help="Workers the matrix is split over (--shard I/N on each).")
@click.option("--target", type=click.Choice([t.value for t in Target]),
              default=Target.KUBERNETES.value, show_default=True,
              help="An Indexed Job and a merge Job, a GitHub Actions workflow, or a "
                   "GitLab CI pipeline.")
@click.option("--dtk-image", required=True, metavar="IMAGE",
              help="dtk's own image (buildah, skopeo and dtk inside: `make image`).")
@click.option("--cache", required=True, metavar="REGISTRY/REPO",
              help="The registry repository the workers share as their build cache.")
@click.option("--name", default="dtk-build", show_default=True,
              help="Name of the Job (and its merge Job) or pipeline jobs.")
@click.option("-n", "--namespace", default="default", show_default=True,
              help="Kubernetes namespace of the Jobs.")
@click.option("--registry-secret", default="dtk-registry", show_default=True,
              help="kubernetes.io/dockerconfigjson Secret with the registry's credentials, "
                   "mounted as KMM mounts a Module's imageRepoSecret.")
@click.option("--pull-secret", default="", metavar="SECRET",
              help="Kubernetes: the imagePullSecret the kubelet pulls --dtk-image with "
                   "(default: --registry-secret).")
@click.option("--source-repo", default=None, metavar="URL",
              help="Kubernetes: the Git repository of the sources the build arguments name "
                   "(-f, --dkms DIR, @FILE); each pod fetches it first and builds in it. "
                   "GitHub and GitLab check out their own repository.")
@click.option("--source-revision", default="HEAD", show_default=True, metavar="REV",
              help="The branch, tag or commit of --source-repo.")
@click.option("--source-secret", default="", metavar="SECRET",
              help="A Secret whose `.git-credentials` key (git's credential store: "
                   "https://USER:TOKEN@HOST a line) lets the pods fetch a private "
                   "--source-repo.")
@click.option("-o", "--output", "out_dir", default=Path(), show_default=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Directory to write the files to.")
@click.argument("build_args", nargs=-1, type=click.UNPROCESSED)
@json_option
def job_cmd(*, shards: int, target: str, dtk_image: str, cache: str, name: str,
            namespace: str, registry_secret: str, pull_secret: str, source_repo: str | None,
            source_revision: str, source_secret: str, out_dir: Path,
            build_args: tuple[str, ...], as_json: bool) -> None:
    """Render the files that split `dtk build BUILD_ARGS…` (given after `--`) over
    SHARDS workers sharing one registry cache, and merge their results."""
    if not build_args:
        raise DtkError("no build arguments given",
                       hint="e.g. dtk render job --shards 4 ... -- --dkms acpi-call-dkms "
                            "--kernels 6.1")
    # The arguments are dtk build's, refused here as dtk build refuses them before any
    # work, not on N workers later.
    request = request_from_args(list(build_args))
    kind = Target(target)
    sources = _sources(kind, source_repo, source_revision, source_secret,
                       _relative_paths(request))
    spec = FanOut(shards, dtk_image, check_repo(cache), build_args, name, namespace,
                  registry_secret, pull_secret, sources)
    files = _files(spec, kind)
    for file_name, text in files.items():
        write_atomic(out_dir / file_name, text.encode())
    if as_json:
        print_json({"files": [str(out_dir / f) for f in files]})
        return
    for file_name in files:
        say(f"wrote {out_dir / file_name}")


def _relative_paths(request: BuildRequest) -> list[str]:
    """The files and directories the build arguments name by relative path: the
    workers' copy of the sources must have them."""
    named = [*map(str, request.files), *(str(p) for p in (request.context, request.sources,
                                                         request.authfile) if p),
             *(d for d in request.dkms if "/" in d or d in (".", "..")),
             *([request.query[1:]] if request.query and request.query.startswith("@") else [])]
    return [p for p in named if not p.startswith("/")]


def _sources(target: Target, repo: str | None, revision: str, secret: str,
             relative: list[str]) -> Sources | None:
    """Where a pod's sources come from (Kubernetes only: the CI systems check out the
    repository the pipeline belongs to)."""
    if target is not Target.KUBERNETES:
        if repo or secret or revision != "HEAD":
            raise DtkError(f"--source-repo, --source-revision and --source-secret are for "
                           f"--target kubernetes: {target.value} checks out the repository "
                           "the pipeline runs for")
        return None
    if repo is None:
        if relative:
            raise DtkError(f"the pods have no copy of {relative[0]}",
                           hint="pass --source-repo URL (each pod fetches it and builds in "
                                "it), or build the sources into --dtk-image and name them by "
                                "absolute path")
        if secret or revision != "HEAD":
            raise DtkError("--source-revision and --source-secret need --source-repo")
        return None
    return Sources(repo, revision, secret)


class _Plain(yaml.SafeDumper):
    """YAML a reader reads: a value written twice is written twice, not as an anchor."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def _files(spec: FanOut, target: Target) -> dict[str, str]:
    def dump(data: object) -> str:
        return yaml.dump(data, Dumper=_Plain, sort_keys=False, width=100)
    if target is Target.KUBERNETES:
        shards, merge = kubernetes(spec)
        return {f"{spec.name}-job.yaml": dump(shards),
                f"{spec.name}-merge-job.yaml": dump(merge)}
    if target is Target.GITHUB:
        return {f"{spec.name}.github-workflow.yml": dump(github(spec))}
    return {f"{spec.name}.gitlab-ci.yml": dump(gitlab(spec))}


def register(group: click.Group) -> None:
    group.add_command(render_group)
