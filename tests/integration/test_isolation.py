"""Integration tests run on dtk directories of their own, never the user's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dtk import paths

pytestmark = pytest.mark.integration


def test_dtk_runs_on_the_sessions_own_state_and_cache(own_dtk_dirs: Path) -> None:
    user_cache = Path.home() / ".cache" / "dtk"
    user_state = Path.home() / ".local" / "state" / "dtk"
    assert paths.state_dir().is_relative_to(own_dtk_dirs)
    assert paths.cache_dir() not in (user_cache, user_state)
    child = subprocess.run([sys.executable, "-c", "import json; from dtk import paths; "
                            "print(json.dumps([str(paths.cache_dir()), str(paths.state_dir())]))"],
                           capture_output=True, text=True, check=True, timeout=60)
    cache, state = map(Path, json.loads(child.stdout))
    assert cache == paths.cache_dir() and state == paths.state_dir()
