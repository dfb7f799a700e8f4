"""Host-wide locks, so that concurrent dtk runs do not corrupt shared caches.

A holder writes who it is into the lock file; a run that has to wait says
whom it waits for (`waiting for the toolkit-build lock held by pid 4242: dtk
toolkit build`), so two dtk commands at once never look like a hang. Only the
pid and the command's name are written, in a file only its owner reads: the
rest of a command line can name paths or hosts a user considers private.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("dtk.lock")


@contextmanager
def locked(path: Path, what: str | None = None, *, shared: bool = False) -> Iterator[None]:
    """Hold an flock on `path` (created if missing) for the block: exclusive, or
    shared (readers of what the exclusive holder writes or deletes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("waiting for the %s lock held by %s", what or path.name,
                        holder(path) or "another dtk run")
            fcntl.flock(fd, mode)
        if not shared:  # shared holders are many; the file names the writer
            _record_holder(fd)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def _record_holder(fd: int) -> None:
    with contextlib.suppress(PermissionError):  # another user's file: theirs to fix
        os.fchmod(fd, 0o600)  # lock files made before this rule were world-readable
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {command_name(sys.argv[1:])}\n".encode(), 0)


def command_name(args: list[str]) -> str:
    """`dtk` and its subcommand words (`dtk toolkit build`), nothing a user typed after."""
    words = []
    for arg in args[:2]:
        if not _WORD.fullmatch(arg):
            break
        words.append(arg)
    return " ".join(["dtk", *words])


def holder(path: Path) -> str:
    """Who holds (or last held) the lock, as it wrote itself down."""
    try:
        return path.read_text(errors="replace").strip()[:300]
    except OSError:
        return ""
