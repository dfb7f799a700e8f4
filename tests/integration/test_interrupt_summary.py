"""Ctrl-C during `dtk build` says which images are tagged before exiting 130
(issue 17 §4): one kernel's cell finishes, the other's is still running."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dtk.engine import buildah

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/dtk-example"


def test_ctrl_c_prints_what_was_tagged(tmp_path: Path, kernel_61: str, kernel_61_rt: str,
                                       toolkit_61: Any) -> None:
    del toolkit_61
    context = tmp_path / "ctx"
    shutil.copytree(EXAMPLE, context)
    containerfile = context / "Containerfile"
    # The RT kernel's cell waits in a RUN step, so that it is running at Ctrl-C.
    containerfile.write_text(containerfile.read_text().replace(
        "WORKDIR /build\n", "WORKDIR /build\nRUN case ${KERNEL_FULL_VERSION} in *rt*) "
        "sleep 25;; esac\n"))
    prefix = f"localhost/dtk-interrupt-{secrets.token_hex(4)}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dtk", "build", "-f", str(containerfile), "--context",
         str(context), "--kernel", kernel_61, "--kernel", kernel_61_rt, "-j", "2",
         "--image", f"{prefix}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "DTK_STATE_DIR": str(tmp_path / "state")})
    try:
        assert proc.stderr is not None
        done: list[str] = []
        deadline = time.monotonic() + 600
        for line in proc.stderr:  # the JSON monitor's events
            if '"kind": "cell"' in line and json.loads(line).get("status") == "built":
                done.append(json.loads(line)["image"])
                break
            assert time.monotonic() < deadline
        assert done and kernel_61 in done[0]
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=300) == 130
        summary = rest[rest.index("interrupted: "):].splitlines()
        listed = [line.strip() for line in summary[1:] if line.startswith("  ")]
        # Exactly what is tagged now: the finished cell, and the running one only if it
        # finished before dtk stopped it (stopping children is dtk.run's business).
        names = [f"{prefix}/ctx:{k}" for k in (kernel_61, kernel_61_rt)]
        assert done[0] in listed
        assert sorted(listed) == sorted(n for n in names if buildah.image_exists(n))
        assert summary[0] == f"interrupted: {len(listed)} image(s) tagged before the interrupt"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for kernel in (kernel_61, kernel_61_rt):
            buildah.remove_image(f"{prefix}/ctx:{kernel}")
