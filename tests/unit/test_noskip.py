"""The rule that a skip is a failure holds, at run time and at collection time, with
CI set or not. Each case runs a real pytest on a small test directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CASES = {
    "run time": "import pytest\n\ndef test_a():\n    pytest.skip('no tool here')\n",
    "collection": "import pytest\npytest.skip('no tool here', allow_module_level=True)\n\n"
                  "def test_a():\n    pass\n",
    "skipif": "import pytest\n\n@pytest.mark.skipif(True, reason='no tool')\n"
              "def test_a():\n    pass\n",
}


@pytest.mark.parametrize("ci", ["", "false"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_skip_fails_the_run(tmp_path: Path, case: str, ci: str) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.noskip"]\n')
    (tmp_path / "test_case.py").write_text(CASES[case])
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "DTK_ALLOW_SKIP")}
    env.update(PYTHONPATH=str(ROOT), **({"CI": ci} if ci else {}))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=120, check=False, cwd=tmp_path)
    assert proc.returncode != 0, proc.stdout
    assert "counts as a failure" in proc.stdout
