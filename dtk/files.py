"""Atomic file writes: the one way dtk replaces a file that others may read.

The data goes to a temporary name in the target's directory and is renamed
over the target, so a crash or Ctrl-C never leaves a half-written cache entry
or signed module under its final name, and concurrent dtk runs see either
the whole old file or the whole new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def host_key(path: Path) -> bytes:
    """32 random bytes kept in `path` (0600, made on first use): a key that never leaves
    this machine, for digests of secrets."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = os.urandom(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()  # another run made it first
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


def write_atomic(target: Path, data: bytes, mode: int | None = None) -> None:
    """Replace `target` with `data`. `mode`: the new file's permissions; by default an
    existing target's are kept (a signed module stays executable if it was), else 0644."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        mode = target.stat().st_mode & 0o7777 if target.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        Path(tmp).chmod(mode)
        Path(tmp).replace(target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
