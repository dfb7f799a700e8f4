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
