"""Atomic writes and content keys for the VM caches under `dtk.paths.cache_dir()/vm`.

A cached file is written to a temporary name in the same directory and renamed,
so a crash or Ctrl-C never leaves a half-written vmlinux or cpio under its final
name, and concurrent dtk runs either see the whole file or none.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from dtk import paths


def vm_cache() -> Path:
    return paths.cache_dir() / "vm"


def digest(*parts: str | bytes) -> str:
    """A short sha256 over `parts`, separated so that ("ab","c") != ("a","bc")."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:24]


def write_atomic(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
