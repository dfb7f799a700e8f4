"""dtk's own image (`make image`) builds a driver cell the way a Job pod runs it:
dtk and buildah inside the container, the container storage inside it too (a
directory of its own, as a pod's emptyDir), privileged as KMM's build pods are.

The toolkit comes from this machine's storage, mounted read-only as an additional
image store (a worker would take it from the registry cache; pulling 1-2 GB here
proves nothing more), so the pod's storage must use the same driver (overlay)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtk.distro import aptindex
from dtk.engine import buildah
from dtk.toolkit.images import ToolkitImage

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHARED_STORE = "/var/lib/containers/storage"


@pytest.fixture
def dtk_image() -> Iterator[str]:
    tag = f"localhost/dtk-test-image-{uuid.uuid4().hex[:8]}:latest"
    subprocess.run(["make", "-C", str(ROOT), "image", f"IMAGE={tag}"], check=True,
                   capture_output=True, timeout=1800)
    yield tag
    buildah.remove_image(tag)


def test_the_dtk_image_builds_a_driver_cell_inside_a_container(
        dtk_image: str, toolkit_612: ToolkitImage, kernel_612: str, tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    storage.mkdir()
    shared = private_store(tmp_path / "shared")
    session_apt = Path(os.environ["XDG_CACHE_HOME"]) / "dtk" / "apt"
    conf = tmp_path / "storage.conf"
    conf.write_text('[storage]\ndriver = "overlay"\ngraphroot = "/var/lib/containers/storage"\n'
                    'runroot = "/run/containers/storage"\n[storage.options]\n'
                    'additionalimagestores = ["/var/lib/shared"]\n')
    try:
        proc = subprocess.run(
            ["podman", "run", "--rm", "--privileged", "--runtime", "runc",
             "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
             "-v", f"{storage}:/var/lib/containers/storage",
             "-v", f"{shared}:/var/lib/shared:ro",
             "-v", f"{conf}:/etc/containers/storage.conf:ro",
             "-v", f"{ROOT / 'tests/data/build/dtkhello'}:/src/dtkhello:ro",
             # The session's package index, pinned (conftest): the same archive as
             # the toolkit's, however much the archive published since.
             "-v", f"{session_apt}:/root/.cache/dtk/apt",
             "-e", f"{aptindex.MAX_AGE_ENV}={os.environ[aptindex.MAX_AGE_ENV]}",
             "-e", "STORAGE_DRIVER=overlay", dtk_image,
             "build", "--dkms", "/src/dtkhello", "--kernel", kernel_612, "--json"],
            capture_output=True, text=True, timeout=1200, check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        [cell] = json.loads(proc.stdout)["outcomes"]
        assert cell["status"] == "built" and not cell["cached"]
        assert cell["modules"] and cell["modules"][0].startswith("dtkhello=")
        assert toolkit_612.name in proc.stderr  # the toolkit was found, not rebuilt
        assert "is up to date" in proc.stderr
    finally:
        subprocess.run(["umount", str(shared)], check=False)
        # The pod's storage holds root-owned overlay layers; its mounts end with it.
        shutil.rmtree(storage, ignore_errors=True)


def private_store(where: Path) -> Path:
    """This machine's storage through a private, read-only bind mount, as
    tests/integration/test_fanout.py reads it (its docstring says why: others' buildah
    runs mount and detach overlay directories under the shared path meanwhile)."""
    where.mkdir()
    subprocess.run(["mount", "--bind", SHARED_STORE, str(where)], check=True)
    subprocess.run(["mount", "--make-private", str(where)], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", str(where)], check=True)
    return where
