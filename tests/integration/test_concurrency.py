"""Two dtk runs at once must both work: a build, prunes, a vmtest and a check started
together on shared kernels all finish with correct results.

`dtk build prune` runs over and over while the build has staging images in flight
(it used to remove them), `buildah images` is listed while images vanish (it used
to fail the listing), and the VM and the check read the same toolkit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtk import run as dtk_run
from dtk.driver.containerfile import STAGING_REPO, staging_name, staging_owner
from dtk.driver.prune import plan_prune, prune
from dtk.engine import buildah

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[2] / "examples" / "dtk-example" / "Containerfile"


def dtk(*args: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dtk", *args], capture_output=True, text=True,
                          timeout=1200, check=False, env=dict(os.environ, DTK_STATE_DIR=str(state)))


@pytest.fixture
def prefix() -> Iterator[str]:
    tag = f"dtk-test-conc-{uuid.uuid4().hex[:8]}"
    yield tag
    for row in buildah.images():
        for name in row.get("names") or ():
            if tag in name:
                buildah.remove_image(name)


@pytest.mark.usefixtures("toolkit_61")
def test_build_prune_vmtest_and_check_at_once(tmp_path: Path, prefix: str, kernel_61: str,
                                              kernel_61_rt: str) -> None:
    ready = f"localhost/{prefix}/ready/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}"
    first = dtk("build", "-f", str(EXAMPLE), "--kernel", kernel_61, "--image", ready,
                "--json", state=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    image = json.loads(first.stdout)["outcomes"][0]["image"]
    fresh = f"localhost/{prefix}/fresh/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}"
    jobs = {
        "build": ("build", "-f", str(EXAMPLE), "--kernel", kernel_61, "--kernel", kernel_61_rt,
                  "--image", fresh, "--json"),
        "vmtest": ("vmtest", image, "--kernel", kernel_61, "--json"),
        "check": ("check", image, "--kernel", kernel_61, "--json"),
    }
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    prunes: list[subprocess.CompletedProcess[str]] = []
    threads = [threading.Thread(target=lambda n=n, a=a: results.__setitem__(
        n, dtk(*a, state=tmp_path / n))) for n, a in jobs.items()]
    for thread in threads:
        thread.start()
    # Plan a prune over and over for as long as the build runs (a dry run: the storage is
    # shared; what a prune removes is checked on a storage of its own below).
    while threads[0].is_alive():
        prunes.append(dtk("build", "prune", "--dry-run", "--json", state=tmp_path / "prune"))
    for thread in threads:
        thread.join()
    assert prunes and all(p.returncode == 0 for p in prunes), [p.stderr for p in prunes]
    for listed in (json.loads(p.stdout) for p in prunes):
        staging = [staging_owner(n) for r in listed for n in r["names"]
                   if n.startswith(STAGING_REPO + "/")]
        assert not [pid for pid in staging if pid and _alive(pid)]  # a live build's
    build = results["build"]
    assert build.returncode == 0, build.stderr[-3000:]
    assert {o["status"] for o in json.loads(build.stdout)["outcomes"]} == {"built"}
    vm = results["vmtest"]
    assert vm.returncode == 0, vm.stdout + vm.stderr[-2000:]
    assert [r["verdict"] for r in json.loads(vm.stdout)] == ["loaded"]
    check = results["check"]
    assert check.returncode == 0, check.stderr
    assert [v["verdict"] for v in json.loads(check.stdout)] == ["loaded"]
    for result in (build, vm, check, *prunes):
        assert "Traceback" not in result.stderr


@pytest.mark.usefixtures("own_storage")
def test_prune_leaves_a_live_builds_staging_image_alone(tmp_path: Path, prefix: str) -> None:
    """A staging image exists between a cell's build and its layout check; a prune at that
    moment used to remove it and fail the build. Now only a dead builder's goes."""
    with buildah.working_container("scratch") as ctr:
        live = ctr.commit(staging_name(f"{prefix}-live", "sha256:" + "1" * 64))
    with buildah.working_container("scratch") as ctr:
        gone = ctr.commit(staging_name(f"{prefix}-gone", "sha256:" + "2" * 64, pid=2**22 + 1))
    try:
        result = dtk("build", "prune", "--json", state=tmp_path)
        assert result.returncode == 0, result.stderr
        removed = {r["id"] for r in json.loads(result.stdout)}
        assert gone in removed and live not in removed
        assert buildah.image_exists(live) and not buildah.image_exists(gone)
    finally:
        buildah.remove_image(live)


def _container_names() -> set[str]:
    listed = subprocess.run(["buildah", "containers", "--format", "{{.ContainerName}}"],
                            capture_output=True, text=True, check=True).stdout
    return set(listed.split())


def test_an_interrupt_during_buildah_from_leaves_no_container(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real `buildah from scratch` runs and makes its container; the interrupt is
    raised as it returns, before dtk could read the container's id (where Ctrl-C or
    SIGTERM used to leave one behind). The container must be gone afterwards."""
    real_run = dtk_run.run
    made: list[str] = []

    def interrupted(argv: list[str], **kwargs: object) -> object:
        result = real_run(argv, **kwargs)  # type: ignore[arg-type]
        if argv[:2] == ["buildah", "from"]:
            made.append(argv[argv.index("--name") + 1])
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(dtk_run, "run", interrupted)
    with pytest.raises(KeyboardInterrupt), buildah.working_container("scratch"):
        pass
    monkeypatch.undo()
    assert made and made[0].startswith(f"dtk-scratch-{os.getpid()}-")
    assert made[0] not in _container_names()


def test_prune_removes_working_containers_of_dead_runs_only() -> None:
    """Containers named the way dtk names them: one whose run is gone (a pid that
    has exited, as after a SIGKILL, where nothing unwinds) and one of this live
    process. `dtk build prune` removes the first and keeps the second."""
    dead_pid = _exited_pid()
    dead = f"dtk-scratch-{dead_pid}-{uuid.uuid4().hex[:8]}"
    live = buildah.container_name("scratch")
    for name in (dead, live):
        subprocess.run(["buildah", "from", "--name", name, "scratch"], check=True,
                       capture_output=True)
    try:
        removals = plan_prune(everything=False)
        names = {r.names[0] for r in removals if r.kind == "container"}
        assert dead in names
        assert live not in names
        prune([r for r in removals if r.kind == "container" and r.names[0] == dead])
        left = _container_names()
        assert dead not in left
        assert live in left
    finally:
        for name in (dead, live):
            buildah.remove_container(name)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def _exited_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
