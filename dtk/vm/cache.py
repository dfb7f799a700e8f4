"""Where the VM caches live: `dtk.paths.cache_dir()/vm` (content-keyed, safe to delete)."""

from __future__ import annotations

from pathlib import Path

from dtk import paths


def vm_cache() -> Path:
    return paths.cache_dir() / "vm"
