"""Where dtk keeps state on the host. Nothing here is inside the repository."""

from __future__ import annotations

import os
from pathlib import Path


def _dir(override: str, xdg: str, fallback: str) -> Path:
    """$override, else $xdg/dtk, else ~/fallback/dtk (the XDG base directory rules)."""
    if os.environ.get(override):
        return Path(os.environ[override])
    base = os.environ.get(xdg)
    return (Path(base) if base else Path.home() / fallback) / "dtk"


def cache_dir() -> Path:
    """Downloaded packages and indexes; safe to delete, rebuilt on demand."""
    return _dir("DTK_CACHE_DIR", "XDG_CACHE_HOME", ".cache")


def state_dir() -> Path:
    """Build logs and results that a user reads after a run."""
    return _dir("DTK_STATE_DIR", "XDG_STATE_HOME", ".local/state")
