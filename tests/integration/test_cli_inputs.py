"""Input handling that needs the archive or a toolkit (issue 17 §3): `build --dry-run`
flags kernels the archive lacks, `toolkit inspect` takes a kernel release."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.unit.kmm_support import dtk

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples/dtk-example/Containerfile"


def _run(*args: str) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as mp:
        return dtk(mp, *args)


def test_dry_run_flags_kernels_not_in_the_archive(kernel_61: str) -> None:
    absent = kernel_61.replace("-amd64", "-arm64")  # a release form the archive lacks here
    code, text = _run("build", "-f", str(EXAMPLE), "--kernel", kernel_61, "--kernel", absent,
                      "--dry-run", "--json")
    assert code == 1, text
    data: dict[str, Any] = json.loads(text[text.index("{"):])
    assert [c["kernel"] for c in data["cells"]] == [kernel_61]
    assert [u["kernel"] for u in data["unknown_kernels"]] == [absent]
    code, text = _run("build", "-f", str(EXAMPLE), "--kernel", absent, "--dry-run")
    assert code == 1 and f"not in the archive, would fail: {absent}" in text, text


def test_toolkit_inspect_takes_a_kernel_release(kernel_61: str, toolkit_61: Any) -> None:
    code, text = _run("toolkit", "inspect", kernel_61, "--json")
    assert code == 0, text
    info = json.loads(text)
    assert info["name"] == toolkit_61.name
    # Exact bytes (issue 17 §4), not buildah's "1.19 GB" converted back: the layer
    # sizes skopeo reads from the same storage.
    raw = subprocess.run(["skopeo", "inspect", "--raw", f"containers-storage:{info['name']}"],
                         check=True, capture_output=True, text=True).stdout
    assert info["size"] == sum(layer["size"] for layer in json.loads(raw)["layers"])
    assert info["size"] % 10_000 != 0
