"""buildah: build, inspect, run in, mount, commit and remove images.

Builds use `--isolation chroot` (the only isolation that works on these hosts
and inside CI containers) and never leave a tag behind on failure: buildah
only tags after the last step commits, and `--force-rm` drops intermediates.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dtk import run as runner
from dtk import scripts
from dtk.engine import registry
from dtk.errors import DtkError

ISOLATION = "chroot"
_INSPECT_TIMEOUT = 60
# Where containers/image reads registries.conf from when no variable says (the user's
# file replaces the system's).
_REGISTRIES_CONFS = (Path.home() / ".config/containers/registries.conf",
                     Path("/etc/containers/registries.conf"))


def ref(name: str) -> str:
    """An image (or container) name from a user, safe to pass as an argument: one that
    starts with '-' would be read as an option. Callers also end options with '--'."""
    if not name or name.startswith("-") or any(c.isspace() for c in name):
        raise DtkError(f"'{name}' is not an image name",
                       hint="image names look like registry/repo:tag or localhost/name:tag")
    return name


@dataclass(frozen=True)
class BuildSpec:
    """One `buildah bud` invocation."""

    containerfile: Path
    context: Path
    tag: str
    build_args: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    volumes: Sequence[str] = ()  # "host:container[:opts]": RUN steps only, never a layer
    layers: bool = False
    timeout: float = 3600
    # FROM pulls (KMM's baseImageRegistryTLS): None is dtk's rule, verified except for
    # loopback registries; True or False, the user's choice for every registry.
    tls_verify: bool | None = None
    authfile: Path | None = None  # registry credentials for those pulls
    mask: Sequence[str] = field(default=(), repr=False)  # secret values kept out of output
    # Someone else's Containerfile: its RUN steps get a pid namespace and a /dev of
    # their own (see `private`), keeping the network KMM-style builds fetch with.
    untrusted: bool = False


def bud(spec: BuildSpec, *, log_file: Path | None = None,
        on_line: Callable[[str], None] | None = None) -> str:
    """Build and tag an image; return its id. Nothing is tagged if any step fails."""
    argv = private(network=True) if spec.untrusted else []
    argv += ["buildah", "bud", "--isolation", ISOLATION, "--force-rm", "--rm",
            f"--layers={'true' if spec.layers else 'false'}",
            "-f", str(spec.containerfile), "-t", ref(spec.tag)]
    for key, value in spec.build_args.items():
        argv += ["--build-arg", f"{key}={value}"]
    for key, value in spec.labels.items():
        argv += ["--label", f"{key}={value}"]
    for volume in spec.volumes:
        argv += ["-v", volume]
    if spec.tls_verify is not None:
        argv.append(f"--tls-verify={'true' if spec.tls_verify else 'false'}")
    if spec.authfile is not None:
        argv += ["--authfile", str(spec.authfile)]
    argv.append(str(spec.context))
    with _loopback_insecure(spec) as env:
        runner.stream(argv, timeout=spec.timeout, log_file=log_file, on_line=on_line,
                      what=f"building {spec.tag} failed", mask=spec.mask, env=env)
    return image_id(spec.tag)


@contextmanager
def _loopback_insecure(spec: BuildSpec) -> Iterator[dict[str, str] | None]:
    """dtk's registry rule for FROM pulls the user left to it: loopback registries are
    not verified. buildah takes one TLS setting for every pull, so those registries are
    marked `insecure` in a registries.conf of this build's own: the one buildah would
    read, extended (never the host's file)."""
    hosts = registry.loopback_registries(from_images(
        spec.containerfile.read_text(errors="replace"), spec.build_args)) \
        if spec.tls_verify is None else []
    named = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    base = Path(named) if named else next((p for p in _REGISTRIES_CONFS if p.is_file()), None)
    text = registry.registries_conf(base.read_text() if base and base.is_file() else "",
                                    hosts) if hosts else None
    if text is None:
        yield None
        return
    fd, name = tempfile.mkstemp(prefix="dtk-registries-", suffix=".conf")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        yield {"CONTAINERS_REGISTRIES_CONF": name}
    finally:
        Path(name).unlink(missing_ok=True)


_ARG_REF = re.compile(r"\$(?:\{(\w+)(?::?([-+])([^}]*))?\}|(\w+))")


def from_images(containerfile: str, build_args: Mapping[str, str]) -> list[str]:
    """The images a Containerfile's FROM lines name (stage names too), with the ARGs
    declared before the first FROM substituted (`$V`, `${V}`, `${V:-default}`,
    `${V:+alt}`; a build arg wins over the default), as buildah resolves them."""
    values = dict(build_args)
    images: list[str] = []
    for line in re.sub(r"\\[ \t]*\r?\n", "", containerfile).splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "ARG" and not images:
            for word in words[1:]:
                name, eq, default = word.partition("=")
                if eq and name not in build_args:
                    values[name] = default.strip("\"'")
        elif words[0].upper() == "FROM":
            image = next((w for w in words[1:] if not w.startswith("--")), "")
            images.append(_ARG_REF.sub(lambda m: _arg_value(m, values), image))
    return images


def _arg_value(match: re.Match[str], values: Mapping[str, str]) -> str:
    name, op, word, bare = match.groups()
    value = values.get(name or bare, "")
    if op == "-":
        return value or word
    if op == "+":
        return word if value else ""
    return value


def image_exists(name: str) -> bool:
    result = runner.run(["buildah", "inspect", "--type", "image", "--format", "{{.FromImageID}}",
                         "--", ref(name)], check=False, timeout=_INSPECT_TIMEOUT)
    return result.returncode == 0


def inspect(name: str) -> dict[str, Any]:
    result = runner.run(["buildah", "inspect", "--type", "image", "--", ref(name)], check=False,
                        timeout=_INSPECT_TIMEOUT)
    if result.returncode != 0:
        raise DtkError(f"image {name} does not exist in local container storage",
                       hint="build it first, or check the name with 'buildah images'")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def image_id(name: str) -> str:
    return str(inspect(name)["FromImageID"])


def labels(name: str) -> dict[str, str]:
    config = inspect(name).get("OCIv1", {}).get("config", {})
    return dict(config.get("Labels") or {})


def diff_ids(name: str) -> list[str]:
    """Uncompressed layer digests, base first (what 'shared layers' means)."""
    return list(inspect(name)["OCIv1"]["rootfs"]["diff_ids"])


_LIST_TRIES = 5


def images(reference_filter: str | None = None) -> list[dict[str, Any]]:
    """Images in local storage; `id` is the full 64-hex id, as `inspect` gives it.

    Another dtk (or anyone) may remove an image while buildah lists them, and
    buildah then fails the whole listing ("image not known"): list again.
    """
    argv = ["buildah", "images", "--json", "--no-trunc"]
    if reference_filter:
        argv += ["--filter", f"reference={reference_filter}"]
    for attempt in range(_LIST_TRIES):
        result = runner.run(argv, timeout=_INSPECT_TIMEOUT, check=False)
        if result.returncode == 0:
            break
        if "image not known" not in result.stderr or attempt == _LIST_TRIES - 1:
            raise runner.CommandError(argv, result.returncode, result.stderr,
                                      "listing images failed")
    out = result.stdout.strip()
    rows = list(json.loads(out) or []) if out else []
    for row in rows:
        row["id"] = str(row.get("id", "")).removeprefix("sha256:")
    return rows


def containers() -> list[tuple[str, str]]:
    """(id, name) of every working container in local storage."""
    result = runner.run(["buildah", "containers", "--json"], timeout=_INSPECT_TIMEOUT)
    rows = json.loads(result.stdout.strip() or "[]") or []
    return [(str(r.get("id", "")), str(r.get("containername", ""))) for r in rows]


def remove_container(name: str) -> None:
    runner.run(["buildah", "rm", "--", ref(name)], check=False, timeout=_INSPECT_TIMEOUT,
               cleanup=True)


def container_owner(name: str) -> int | None:
    """The pid in a name `container_name` made, or None for any other name."""
    m = re.fullmatch(r"dtk-[A-Za-z0-9_.-]*-(\d+)-[0-9a-f]{8}", name)
    return int(m[1]) if m else None


def remove_image(name: str) -> None:
    runner.run(["buildah", "rmi", "--", ref(name)], check=False, timeout=_INSPECT_TIMEOUT,
               cleanup=True)


def tag(image: str, *names: str) -> None:
    runner.run(["buildah", "tag", "--", ref(image), *map(ref, names)], timeout=_INSPECT_TIMEOUT)


def image_size(name: str) -> int:
    """Bytes of the image's layers, exact, as its manifest in local storage records them
    (uncompressed tars for images built here; `buildah images` rounds to 3 digits)."""
    manifest = json.loads(inspect(name).get("Manifest") or "{}")
    return sum(int(layer.get("size", 0)) for layer in manifest.get("layers") or [])


class Container:
    """A working container; use `working_container` so it is always removed."""

    def __init__(self, cid: str) -> None:
        self.id = cid

    def run(self, argv: Sequence[str], *, volumes: Sequence[str] = (),
            env: Mapping[str, str] | None = None, workdir: str | None = None,
            timeout: float = 3600, log_file: Path | None = None,
            on_line: Callable[[str], None] | None = None, check: bool = True,
            what: str | None = None, offline: bool = False) -> runner.Result:
        """Run `argv` in the container. `offline`, for someone else's code: `private`,
        without a network."""
        cmd = private(network=False) if offline else []
        cmd += ["buildah", "run", "--isolation", ISOLATION]
        for volume in volumes:
            cmd += ["-v", volume]
        for key, value in (env or {}).items():
            cmd += ["--env", f"{key}={value}"]
        if workdir:
            cmd += ["--workingdir", workdir]
        cmd += [self.id, "--", *argv]
        return runner.stream(cmd, timeout=timeout, log_file=log_file, on_line=on_line,
                             check=check, what=what)

    def sh(self, script: str, **kwargs: Any) -> runner.Result:
        return self.run(["/bin/sh", "-ec", script], **kwargs)

    def copy_in(self, source: Path, dest: str) -> None:
        runner.run(["buildah", "copy", self.id, str(source), dest], timeout=600)

    def config(self, *args: str) -> None:
        runner.run(["buildah", "config", *args, self.id], timeout=_INSPECT_TIMEOUT)

    @contextmanager
    def mounted(self) -> Iterator[Path]:
        """The container's root on the host, unmounted after the block."""
        path = runner.run(["buildah", "mount", self.id], timeout=_INSPECT_TIMEOUT).stdout.strip()
        try:
            yield Path(path)
        finally:
            runner.run(["buildah", "umount", self.id], check=False, timeout=_INSPECT_TIMEOUT,
                       cleanup=True)

    def commit(self, name: str) -> str:
        """Commit to `name`; only called once the container's content is complete."""
        out = runner.run(["buildah", "commit", "--rm=false", "-q", "--", self.id, ref(name)],
                         timeout=1800).stdout.strip()
        return out.splitlines()[-1] if out else image_id(name)


def private(*, network: bool) -> list[str]:
    """The prefix that runs a buildah command for someone else's code: chroot isolation
    binds the caller's /dev and /proc into the container (the host's disks and swap,
    every host process's command line). In its own mount and pid namespaces it binds a
    /dev with no host device (dtk/data/private-dev.sh) and a /proc of the build's own
    processes, which all die with `unshare`; without `network`, in an empty network
    namespace too (chroot isolation cannot take --network)."""
    return ["unshare", *([] if network else ["--net"]), "--mount", "--propagation", "private",
            "--pid", "--fork", "--kill-child", "--mount-proc", "sh",
            str(scripts.path("private-dev.sh"))]


@contextmanager
def working_container(image: str, *, name: str | None = None) -> Iterator[Container]:
    """`buildah from IMAGE` for the block, removed afterwards whatever happens.

    The container is named before it exists, so that it is removed even when an
    interrupt lands while `buildah from` runs: buildah may have made it by then,
    and its id would never have reached us."""
    name = name or container_name(image)
    argv = ["buildah", "from", "--name", name, "--pull-never", "--isolation", ISOLATION]
    if image == "scratch":
        argv = ["buildah", "from", "--name", name]
    try:
        cid = runner.run([*argv, "--", ref(image)], timeout=600,
                         what=f"cannot start a container from {image}"
                         ).stdout.strip().splitlines()[-1]
        yield Container(cid)
    finally:
        remove_container(name)


def container_name(image: str) -> str:
    """`dtk-<image's short name>-<pid>-<random>`: unique, and says whose it is."""
    short = re.sub(r"[^A-Za-z0-9_.-]+", "-", image.rsplit("/", 1)[-1].split(":", 1)[0])
    return f"dtk-{short[:40]}-{os.getpid()}-{secrets.token_hex(4)}"


def quote(argv: Sequence[str]) -> str:
    return shlex.join(argv)
