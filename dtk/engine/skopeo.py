"""skopeo: copy images between local storage and registries, inspect remote ones.

Every call takes `tls_verify` as the user gave it (None: dtk's rule, see
`dtk.engine.registry`) and turns skopeo's refusals into `RegistryError`s that
name the cause and the fix.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dtk import run as runner
from dtk.engine import buildah, registry
from dtk.engine.registry import Failure, RegistryError
from dtk.errors import DtkError

_ATTEMPTS = 3


def command(*args: str) -> list[str]:
    """`skopeo ARGS`, reading the registries.conf buildah reads: CONTAINERS_REGISTRIES_CONF
    when set (buildah and newer skopeo read the variable; bookworm's skopeo 1.9 only
    takes the option), so builds, lookups, pulls and pushes see the same registries."""
    conf = os.environ.get("CONTAINERS_REGISTRIES_CONF")
    return ["skopeo", *(["--registries-conf", conf] if conf else []), *args]


def _docker(image: str) -> str:
    return image if "://" in image else f"docker://{image}"


def _flag(name: str, image: str, tls_verify: bool | None) -> str:
    return f"{name}={'true' if registry.tls_verify(image, tls_verify) else 'false'}"


def _auth(authfile: Path | None, flag: str = "--authfile") -> list[str]:
    return [flag, str(authfile)] if authfile is not None else []


def push(image: str, dest: str, *, tls_verify: bool | None = None,
         authfile: Path | None = None,
         on_retry: Callable[[str], None] | None = None,
         on_line: Callable[[str], None] | None = None) -> str:
    """Push a local image to `dest`; return the manifest digest the registry holds.

    Only failures that may pass (a reset connection, a 5xx, a timeout) are retried,
    each retry announced through `on_retry`; a refused connection, refused
    credentials or a TLS mismatch fail at once. The digest is only returned once
    the registry has the whole manifest, so nothing half-pushed counts as pushed.
    `on_line` gets skopeo's progress lines (a blob started, written) as they come."""
    for attempt in range(1, _ATTEMPTS + 1):
        with tempfile.TemporaryDirectory(prefix="dtk-push-") as tmp:
            digest_file = Path(tmp) / "digest"
            argv = command("copy", _flag("--dest-tls-verify", dest, tls_verify),
                           *_auth(authfile, "--dest-authfile"), "--digestfile",
                           str(digest_file), f"containers-storage:{image}", _docker(dest))
            if on_line is None:
                result = runner.run(argv, check=False, timeout=1800)
                output = result.stderr
            else:  # skopeo's progress, merged with its errors, line by line
                result = runner.stream(argv, check=False, timeout=1800, on_line=on_line)
                output = result.stdout
            if result.returncode == 0:
                return digest_file.read_text().strip()
        err = registry.error(dest, output, f"pushing {image}"
                             + (f" to {dest}" if dest != image else ""))
        if err.failure is not Failure.TRANSIENT or attempt == _ATTEMPTS:
            raise err
        if on_retry is not None:
            on_retry(f"{err.message}; retrying ({attempt + 1}/{_ATTEMPTS})")
        time.sleep(2 ** attempt)
    raise AssertionError("unreachable")  # the loop returns or raises


def _inspect(image: str, tls_verify: bool | None, authfile: Path | None,
             *extra: str) -> runner.Result:
    argv = command("inspect", "--no-tags", *extra, _flag("--tls-verify", image, tls_verify),
                   *_auth(authfile), _docker(image))
    return runner.run(argv, check=False, timeout=120)


def remote_inspect(image: str, *, tls_verify: bool | None = None,
                   authfile: Path | None = None) -> dict[str, Any] | None:
    """`skopeo inspect` of an image in its registry; None if the registry says it is
    not there. Refused credentials and unreachable registries are `RegistryError`s."""
    result = _inspect(image, tls_verify, authfile)
    if result.returncode == 0:
        data: dict[str, Any] = json.loads(result.stdout)
        return data
    err = registry.error(image, result.stderr, f"looking up {image}")
    if err.failure is Failure.NOT_FOUND:
        return None
    raise err


def remote_digest(image: str, *, tls_verify: bool | None = None,
                  authfile: Path | None = None) -> str | None:
    data = remote_inspect(image, tls_verify=tls_verify, authfile=authfile)
    return str(data["Digest"]) if data else None


def remote_config_digest(image: str, *, tls_verify: bool | None = None,
                         authfile: Path | None = None) -> str | None:
    """The digest of the image's config in its registry: the same bytes as a local
    image whose id it is (skopeo copies the config unchanged, while layers may be
    recompressed and the manifest rewritten). None if the registry lacks the image
    or holds a manifest list (nothing single to compare)."""
    result = _inspect(image, tls_verify, authfile, "--raw")
    if result.returncode != 0:
        err = registry.error(image, result.stderr, f"looking up {image}")
        if err.failure is Failure.NOT_FOUND:
            return None
        raise err
    try:  # the registry's own bytes: anything may come back
        manifest = json.loads(result.stdout)
    except ValueError:
        raise RegistryError(Failure.OTHER, f"looking up {image} failed: its registry "
                            "answered with a manifest that is not JSON", None, "") from None
    config = manifest.get("config") if isinstance(manifest, dict) else None
    digest = config.get("digest") if isinstance(config, dict) else None
    return str(digest) if digest else None


def pull(image: str, *, tls_verify: bool | None = None, authfile: Path | None = None) -> str:
    """Copy a registry image into local container storage under its own name."""
    name = image.split("://", 1)[-1]
    result = runner.run(command("copy", _flag("--src-tls-verify", image, tls_verify),
                                *_auth(authfile, "--src-authfile"), _docker(image),
                                f"containers-storage:{name}"), check=False, timeout=1800)
    if result.returncode != 0:
        raise registry.error(image, result.stderr, f"pulling {image}")
    return name


def ensure_local(image: str, *, tls_verify: bool | None = None,
                 authfile: Path | None = None) -> bool:
    """Make a registry-only image usable from local storage; True if it was pulled.

    An image already in local storage is used as it is (as `buildah from
    --pull-never` would); a name without a registry must be local."""
    if buildah.image_exists(image):
        return False
    if registry_of(image) is None:
        raise DtkError(f"image {image} does not exist in local container storage",
                       hint="build it first, or name it with its registry to pull it")
    pull(image, tls_verify=tls_verify, authfile=authfile)
    return True


def registry_of(image: str) -> str | None:
    """The registry an image names (HOST[:PORT]), or None for a local-only name."""
    return registry.parse(image).registry


def copy_to_layout(source: str, layout: Path, ref_name: str, *,
                   tls_verify: bool | None = None, authfile: Path | None = None,
                   policy: Path | None = None) -> None:
    """Copy `source` (docker://…, oci-archive:…, oci:…) into the OCI layout directory
    `layout` under the tag `ref_name`: no container storage, no daemon (what a host
    without a container engine has). skopeo applies the host's containers policy, or
    the one at `policy`."""
    image = source.removeprefix("docker://")
    from_registry = image != source
    argv = command(*(["--policy", str(policy)] if policy else []), "copy",
                   *([_flag("--src-tls-verify", image, tls_verify)] if from_registry else []),
                   *(_auth(authfile, "--src-authfile") if from_registry else []),
                   source, f"oci:{layout}:{ref_name}")
    result = runner.run(argv, check=False, timeout=1800)
    if result.returncode == 0:
        return
    if from_registry:
        raise registry.error(image, result.stderr, f"fetching {image}")
    raise DtkError(f"fetching {source} failed: {registry.last_message(result.stderr)}",
                   hint="check that the archive or layout exists and holds one image")
