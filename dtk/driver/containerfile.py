"""Build a KMM-style Containerfile for one kernel, as KMM's build would.

buildah tags only after the last step commits, so a failing Containerfile
leaves nothing behind. The image is built under a staging name, checked
against KMM's layout (modules under /opt/lib/modules/<kernel>, depmod run,
sh/cp/mkdir/modprobe present), labelled with the modules it carries, and only
then committed under its final name.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dtk import rootfs
from dtk import run as runner
from dtk.driver.dkms import Built
from dtk.driver.outcome import CellFailedError, find_modules, module_versions
from dtk.driver.plan import BuildSecret, Cell
from dtk.driver.sources import ContainerfileSource
from dtk.engine import buildah, made
from dtk.errors import DtkError
from dtk.k8snames import config_map_key_problems, dns1123_subdomain_problems

STAGING_REPO = "localhost/dtk-staging"


def staging_name(module: str, input_hash: str, pid: int | None = None) -> str:
    """Where a cell's image waits for its layout check. The builder's pid is in the name,
    so that a prune running meanwhile leaves a live build's image alone."""
    return f"{STAGING_REPO}/{pid or os.getpid()}-{module}:{input_hash.removeprefix('sha256:')[:20]}"


def staging_owner(name: str) -> int | None:
    """The pid that made a staging image, or None for a name that is not one."""
    rest = name.removeprefix(STAGING_REPO + "/")
    head = rest.split("-", 1)[0]
    return int(head) if rest != name and head.isdigit() else None


@contextmanager
def secret_volumes(secrets: Sequence[BuildSecret]) -> Iterator[list[str]]:
    """Each Secret as a directory of 0600 files, mounted read-only at
    /run/secrets/<name> for RUN steps (KMM's layout: /run/secrets/<name>/<key>).
    `buildah bud -v` mounts never enter a layer; the files are removed afterwards.
    Names and keys come from manifests: each is checked as Kubernetes checks it before
    anything is written, each Secret gets a directory of its own that no name chooses,
    and files are created relative to it (no link followed, none replaced)."""
    if not secrets:
        yield []
        return
    _check_secret_names(secrets)
    with tempfile.TemporaryDirectory(prefix="dtk-secrets-") as tmp:
        volumes = []
        for secret in secrets:
            directory = tempfile.mkdtemp(prefix="secret-", dir=tmp)  # mode 0700
            dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
            try:
                for key, value in secret.files:
                    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                                 0o600, dir_fd=dir_fd)
                    with os.fdopen(fd, "wb") as out:
                        out.write(value)
            finally:
                os.close(dir_fd)
            volumes.append(f"{directory}:/run/secrets/{secret.name}:ro")
        yield volumes


def _check_secret_names(secrets: Sequence[BuildSecret]) -> None:
    for secret in secrets:
        problems = dns1123_subdomain_problems(secret.name)
        if problems:
            raise DtkError(f"build secret name {secret.name!r} is not a Kubernetes object "
                           f"name: {'; '.join(problems)}")
        for key, _ in secret.files:
            problems = config_map_key_problems(key)
            if problems:
                raise DtkError(f"build secret {secret.name}: key {key!r} is not a Kubernetes "
                               f"Secret key: {'; '.join(problems)}")


# Where KMM's build pods mount the node's /lib/modules (KMM d8e8410; "/host" keeps it
# out of kaniko's way): KMM's docs link /opt/lib/modules/K/host to /host/lib/modules/K
# before depmod, so the image records in-tree dependencies.
HOST_MODULES = "/host/lib/modules"


@contextmanager
def host_modules(cell: Cell) -> Iterator[list[str]]:
    """The kernel's /lib/modules, from its toolkit, read-only at /host/lib/modules for RUN
    steps: what a KMM build pod on a node running K sees there. Never in a layer; the
    toolkit is part of the cell's key already."""
    if cell.toolkit is None:
        yield []
        return
    with buildah.working_container(cell.toolkit.name) as ctr, ctr.mounted() as root:
        modules = rootfs.resolve(root, "/lib/modules")
        yield [f"{modules}:{HOST_MODULES}:ro"] if modules is not None and modules.is_dir() \
            else []


def build_cell(cell: Cell, source: ContainerfileSource, log: Path,
               on_line: Callable[[str], None] | None = None,
               authfile: Path | None = None) -> Built:
    staging = staging_name(cell.module, cell.input_hash)
    try:
        with secret_volumes(cell.secrets) as secret_mounts, host_modules(cell) as host:
            volumes = [*secret_mounts, *host]
            spec = buildah.BuildSpec(
                containerfile=source.containerfile, context=source.context, tag=staging,
                build_args=dict(cell.build_args), labels=cell.labels(), volumes=volumes,
                tls_verify=cell.pull_tls_verify, authfile=authfile,
                mask=[v for s in cell.secrets for v in s.values()], untrusted=True)
            _bud(spec, cell, log, on_line)
        with buildah.working_container(staging) as ctr:
            with ctr.mounted() as root:
                versions = module_versions(find_modules(root, cell.kernel, cell.layout))
            ctr.config("--label", "dtk.build.modules=" + ",".join(versions))
            image_id = ctr.commit(cell.image)
        made.record(image_id, cell.image, "driver")
    finally:
        buildah.remove_image(staging)
    return Built(image_id, versions)


def _bud(spec: buildah.BuildSpec, cell: Cell, log: Path,
         on_line: Callable[[str], None] | None) -> None:
    try:
        buildah.bud(spec, log_file=log, on_line=on_line)
    except runner.CommandError as exc:
        raise CellFailedError(f"the Containerfile failed to build for {cell.kernel}",
                              exc.tail) from None
