"""A Module's imageRepoSecret as a file the container tools read (`--authfile`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dtk.errors import DtkError
from dtk.kmmapi import model as m


@contextmanager
def authfile(secret: m.Secret | None) -> Iterator[Path | None]:
    """The imageRepoSecret's .dockerconfigjson as a 0600 file for --authfile, then removed."""
    if secret is None:
        yield None
        return
    payload = secret.data.get(".dockerconfigjson")
    if payload is None:
        raise DtkError(f"Secret {secret.namespace}/{secret.name} has no .dockerconfigjson key")
    fd, name = tempfile.mkstemp(prefix="dtk-auth-", suffix=".json")  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(payload)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)
