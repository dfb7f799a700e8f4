"""skopeo: copy images between local storage and registries, inspect remote ones."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from dtk import run as runner
from dtk.engine import buildah
from dtk.errors import DtkError

_RETRIES = 3


def _tls(dest: str, tls_verify: bool | None) -> list[str]:
    if tls_verify is None:
        # Loopback registries are plain HTTP by nature; anything else keeps TLS on.
        host = dest.removeprefix("docker://").split("/", 1)[0]
        tls_verify = not host.startswith(("localhost", "127.", "[::1]"))
    return [f"--dest-tls-verify={'true' if tls_verify else 'false'}"]


_NOT_FOUND = ("manifest unknown", "name unknown", "not found", "404")
_REFUSED = ("unauthorized", "authentication required", "denied", "401", "403")


def _auth(authfile: Path | None) -> list[str]:
    return ["--authfile", str(authfile)] if authfile is not None else []


def push(image: str, dest: str, *, tls_verify: bool | None = None,
         authfile: Path | None = None) -> str:
    """Push a local image to `dest` (a docker:// reference); return the pushed digest.

    Transient registry errors are retried; the digest is only returned once the
    registry has the whole manifest, so nothing half-pushed is reported as pushed.
    """
    ref = dest if "://" in dest else f"docker://{dest}"
    last: runner.CommandError | None = None
    for attempt in range(_RETRIES):
        try:
            result = runner.run(
                ["skopeo", "copy", "--retry-times", "2", *_tls(ref, tls_verify),
                 *_auth(authfile), "--digestfile", "/dev/stdout",
                 f"containers-storage:{image}", ref],
                timeout=1800, what=f"pushing {image} to {dest} failed")
            return result.stdout.strip().splitlines()[-1]
        except runner.CommandError as exc:
            last = exc
            if refused(exc.tail):  # wrong credentials do not get better by retrying
                break
            time.sleep(2 ** attempt)
    assert last is not None
    raise DtkError(last.message, hint="check that the registry is reachable and that you "
                   "are logged in ('skopeo login'); pass --tls-verify=false for a plain-HTTP one")


def inspect_remote(ref: str, *, tls_verify: bool | None = None) -> dict[str, Any]:
    ref = ref if "://" in ref else f"docker://{ref}"
    tls = _tls(ref, tls_verify)[0].replace("--dest-", "--")
    result = runner.run(["skopeo", "inspect", tls, ref], timeout=120,
                        what=f"cannot inspect {ref}")
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def refused(text: str) -> bool:
    """Whether a registry's answer says the credentials were refused."""
    return any(marker in text.lower() for marker in _REFUSED)


def _inspect(ref: str, tls_verify: bool, authfile: Path | None) -> runner.Result:
    ref = ref if "://" in ref else f"docker://{ref}"
    argv = ["skopeo", "inspect", "--no-tags", f"--tls-verify={'true' if tls_verify else 'false'}",
            *_auth(authfile), ref]
    return runner.run(argv, check=False, timeout=120)


def remote_inspect(image: str, *, tls_verify: bool = True,
                   authfile: Path | None = None) -> dict[str, Any] | None:
    """`skopeo inspect` of an image in its registry; None if the registry says it is
    not there. Refused credentials and unreachable registries are errors."""
    result = _inspect(image, tls_verify, authfile)
    if result.returncode == 0:
        data: dict[str, Any] = json.loads(result.stdout)
        return data
    stderr = result.stderr.strip()
    if refused(stderr):
        raise DtkError(f"the registry refused the credentials for {image}",
                       hint="check the Module's imageRepoSecret (a kubernetes.io/"
                            "dockerconfigjson Secret with an entry for this registry)")
    if any(marker in stderr.lower() for marker in _NOT_FOUND):
        return None
    last = (stderr.splitlines() or ["no output"])[-1]
    raise DtkError(f"cannot inspect {image} in its registry: {last}")


def remote_digest(image: str, *, tls_verify: bool = True,
                  authfile: Path | None = None) -> str | None:
    data = remote_inspect(image, tls_verify=tls_verify, authfile=authfile)
    return str(data["Digest"]) if data else None


def pull(image: str, *, tls_verify: bool = True, authfile: Path | None = None) -> str:
    """Copy a registry image into local container storage under its own name."""
    ref = image if "://" in image else f"docker://{image}"
    name = image.split("://", 1)[-1]
    try:
        runner.run(["skopeo", "copy", "--retry-times", "2",
                    f"--src-tls-verify={'true' if tls_verify else 'false'}",
                    *(["--src-authfile", str(authfile)] if authfile else []),
                    ref, f"containers-storage:{name}"],
                   timeout=1800, what=f"pulling {image} failed")
    except runner.CommandError as exc:
        if refused(exc.tail):
            raise DtkError(f"the registry refused the credentials for {image}",
                           hint="pass the registry's credentials (dtk module: the "
                                "imageRepoSecret; otherwise --authfile or 'skopeo login')"
                           ) from None
        raise
    return name


def ensure_local(image: str, *, tls_verify: bool = True, authfile: Path | None = None) -> bool:
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
    """The registry an image names, or None for local-only names (no dot, colon, localhost)."""
    first, sep, _ = image.partition("/")
    if not sep or first == "localhost" or not ("." in first or ":" in first):
        return None
    return first


def copy_to_layout(source: str, layout: Path, ref_name: str, *, tls_verify: bool = True,
                   authfile: Path | None = None) -> None:
    """Copy `source` (docker://…, oci-archive:…, oci:…) into the OCI layout directory
    `layout` under the tag `ref_name`: no container storage, no daemon (what a host
    without a container engine has). skopeo applies the host's containers policy."""
    registry = source.startswith("docker://")
    argv = ["skopeo", "copy", "--retry-times", "2",
            *([f"--src-tls-verify={'true' if tls_verify else 'false'}"] if registry else []),
            *(["--src-authfile", str(authfile)] if authfile and registry else []),
            source, f"oci:{layout}:{ref_name}"]
    try:
        runner.run(argv, timeout=1800, what=f"fetching {source} failed")
    except runner.CommandError as exc:
        if registry and refused(exc.tail):
            raise DtkError(f"the registry refused the credentials for {source}",
                           hint="check the Module's imageRepoSecret") from None
        raise
