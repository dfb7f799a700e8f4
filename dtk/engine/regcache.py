"""A registry repository used as a content-addressed store: look an entry up by tag,
take it by digest, copy it within the registry, write small record images.

Only what the build cache needs, beside skopeo.py's general pushes and pulls. Every
read that matters is by digest: a tag is only where the search starts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dtk import run as runner
from dtk.engine import buildah, registry, skopeo


@dataclass(frozen=True)
class Entry:
    """What a tag points at: the manifest's digest and its config's labels."""

    digest: str
    labels: dict[str, str]


def tls_verify_for(repo: str, tls_verify: bool | None) -> bool:
    """dtk's one rule (dtk.engine.registry): the user's choice, else TLS unless loopback."""
    return registry.tls_verify(repo, tls_verify)


def _tls(flag: str, verify: bool) -> str:
    return f"--{flag}tls-verify={'true' if verify else 'false'}"


def _auth(flag: str, authfile: Path | None) -> list[str]:
    return [f"--{flag}authfile", str(authfile)] if authfile else []


def lookup(ref: str, *, tls_verify: bool, authfile: Path | None) -> Entry | None:
    """The entry a tag names, or None if there is none. Refused credentials and an
    unreachable registry raise DtkError (the caller decides to go on without)."""
    result = runner.run(skopeo.command("inspect", "--no-tags", _tls("", tls_verify),
                                       *_auth("", authfile), f"docker://{ref}"),
                        check=False, timeout=120)
    if result.returncode == 0:
        data = json.loads(result.stdout)
        labels = {str(k): str(v) for k, v in (data.get("Labels") or {}).items()}
        return Entry(str(data["Digest"]), labels)
    if registry.classify(result.stderr) is registry.Failure.NOT_FOUND:
        return None
    raise registry.error(ref, result.stderr, f"looking up {ref}")


def pull_by_digest(repo: str, digest: str, local: str, *, tls_verify: bool,
                   authfile: Path | None) -> None:
    """Copy `repo@digest` into local storage as `local`: skopeo checks the manifest
    against the digest and every blob against the manifest."""
    try:
        runner.run(skopeo.command("copy", "--retry-times", "2", _tls("src-", tls_verify),
                                  *_auth("src-", authfile), f"docker://{repo}@{digest}",
                                  f"containers-storage:{buildah.ref(local)}"),
                   timeout=1800, what=f"pulling {repo}@{digest} failed")
    except runner.CommandError as exc:
        raise registry.error(repo, exc.tail, f"pulling {repo}@{digest}") from None


def copy_within(repo: str, digest: str, dest: str, *, tls_verify: bool,
                authfile: Path | None) -> str:
    """Tag `repo@digest` as `dest` in the same registry without moving its layers
    (the registry mounts the blobs across repositories); the digest `dest` got."""
    try:
        result = runner.run(
            skopeo.command("copy", "--retry-times", "2", _tls("src-", tls_verify),
                           _tls("dest-", tls_verify), *_auth("src-", authfile),
                           *_auth("dest-", authfile), "--digestfile", "/dev/stdout",
                           f"docker://{repo}@{digest}", f"docker://{dest}"),
            timeout=1800, what=f"copying {repo}@{digest} to {dest} failed")
    except runner.CommandError as exc:
        raise registry.error(dest, exc.tail, f"copying {repo}@{digest} to {dest}") from None
    return result.stdout.strip().splitlines()[-1]


def record_image(name: str, labels: dict[str, str]) -> None:
    """A local image holding nothing but `labels`: a record a registry can store."""
    with buildah.working_container("scratch") as ctr:
        ctr.config(*(arg for key, value in sorted(labels.items())
                     for arg in ("--label", f"{key}={value}")))
        ctr.commit(name)


def encode(data: Mapping[str, object]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))
