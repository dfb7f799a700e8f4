"""Where dtk keeps state on the host. Nothing here is inside the repository."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Downloaded packages and indexes; safe to delete, rebuilt on demand."""
    env = os.environ.get("DTK_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "dtk"


def state_dir() -> Path:
    """Build logs and results that a user reads after a run."""
    env = os.environ.get("DTK_STATE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_STATE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local/state") / "dtk"
