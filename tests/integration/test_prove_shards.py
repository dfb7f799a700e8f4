"""`dtk prove --shard I/N` on two "machines", merged by `dtk report merge`: the same
terminal matrix, JSON verdicts and HTML page as one `dtk prove` of the whole matrix.
Real builds and real boots: a small matrix (the test module, two kernel lines)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtk.engine import buildah

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data" / "build"


def dtk(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dtk", *args], capture_output=True, text=True,
                          timeout=1800, check=False,
                          env=dict(os.environ, DTK_STATE_DIR=str(state)))


@pytest.fixture
def template() -> Iterator[str]:
    prefix = f"localhost/dtk-test-prove-shards-{uuid.uuid4().hex[:8]}"
    yield prefix + "/${MOD_NAME}:${KERNEL_FULL_VERSION}"
    for row in buildah.images():
        for name in row.get("names") or ():
            if name.startswith(prefix + "/"):
                buildah.remove_image(name)


def verdicts(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Each cell's verdicts, without times and log paths."""
    return [(c["row"], c["kernel"], c["build"], c["check"], c["boot"], c["green"],
             c["reasons"]) for c in data["cells"]]


@pytest.mark.usefixtures("toolkit_61", "toolkit_612")
def test_proven_in_shards_and_merged_is_the_whole_proof(
        template: str, kernel_61: str, kernel_612: str, tmp_path: Path) -> None:
    # dtkold builds for 6.1 only: a red cell beside the green ones.
    matrix = ["--dkms", str(DATA / "dtkhello"), "--dkms", str(DATA / "dtkold"),
              "--kernel", kernel_61, "--kernel", kernel_612, "--image", template,
              "--rebuild", "--no-cache"]  # every run builds and boots for itself
    whole = dtk("prove", *matrix, "--json", "--html", str(tmp_path / "whole.html"),
                state=tmp_path / "whole")
    assert whole.stdout.strip(), whole.stderr[-3000:]
    files = []
    for index in (1, 2):
        part = dtk("prove", *matrix, "--shard", f"{index}/2", "--json", state=tmp_path / "s")
        assert part.stdout.strip(), part.stderr[-3000:]
        files.append(tmp_path / f"shard-{index}.json")
        files[-1].write_text(part.stdout)
    merged = dtk("report", "merge", *map(str, files), "--json", "--html",
                 str(tmp_path / "merged.html"), state=tmp_path / "m")
    assert merged.returncode == whole.returncode == 1, merged.stderr[-2000:]
    want, got = json.loads(whole.stdout), json.loads(merged.stdout)
    assert verdicts(got) == verdicts(want)
    assert (got["rows"], got["kernels"], got["ok"]) == (want["rows"], want["kernels"], False)
    cells = {(c["row"], c["kernel"]): c for c in want["cells"]}
    assert cells[("dtkhello", kernel_61)]["boot"] == "loaded"
    assert cells[("dtkold", kernel_612)]["build"] == "failed"
    text = dtk("report", "merge", *map(str, files), state=tmp_path / "m").stdout
    assert "dtkhello" in text and "dtkold" in text and kernel_612 in text
