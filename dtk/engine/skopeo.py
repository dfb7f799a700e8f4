"""skopeo: copy images between local storage and registries, inspect remote ones."""

from __future__ import annotations

import json
import time
from typing import Any

from dtk import run as runner
from dtk.errors import DtkError

_RETRIES = 3


def _tls(dest: str, tls_verify: bool | None) -> list[str]:
    if tls_verify is None:
        # Loopback registries are plain HTTP by nature; anything else keeps TLS on.
        host = dest.removeprefix("docker://").split("/", 1)[0]
        tls_verify = not host.startswith(("localhost", "127.", "[::1]"))
    return [f"--dest-tls-verify={'true' if tls_verify else 'false'}"]


def push(image: str, dest: str, *, tls_verify: bool | None = None) -> str:
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
                 "--digestfile", "/dev/stdout", f"containers-storage:{image}", ref],
                timeout=1800, what=f"pushing {image} to {dest} failed")
            return result.stdout.strip().splitlines()[-1]
        except runner.CommandError as exc:
            last = exc
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
