"""A hostile DKMS tree or build gets no host file into a driver image.

The attacks are the ones a package author (or their build) can make: a `firmware/`
that is a symlink to a host directory, and a build that swaps its staged output tree
(`/opt`) for a link whose target means one thing in the container, another to dtk's
checks and a third on the host. The host directory holds a marker; no image may.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dtk import paths
from dtk.engine import buildah
from tests.integration.test_driver_containerfile import EXAMPLE
from tests.integration.test_driver_dkms import by_cell, hello_variant, prefix, run_build

pytestmark = pytest.mark.integration

__all__ = ["prefix"]  # the fixture, shared with test_driver_dkms

MARKER = b"dtk-test-host-secret-5d1c"


def host_dir(tmp_path: Path) -> Path:
    """A host directory with a marker file, as a private key directory would be."""
    secret = tmp_path / "host-secret"
    secret.mkdir()
    (secret / "id_rsa").write_bytes(MARKER + b"\n")
    return secret


def images_with_marker(image: str) -> list[str]:
    """Paths in `image` whose content holds MARKER (links not followed)."""
    found = []
    with buildah.working_container(image) as ctr, ctr.mounted() as root:
        for dirpath, _dirs, files in os.walk(root, followlinks=False):
            for name in files:
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                if MARKER in path.read_bytes():
                    found.append(str(path.relative_to(root)))
    return found


@pytest.mark.usefixtures("toolkit_61")
def test_firmware_link_to_a_host_directory_stays_out(tmp_path: Path, prefix: str,
                                                     kernel_61: str) -> None:
    tree = hello_variant(tmp_path, "dtkhello")
    (tree / "firmware").symlink_to(host_dir(tmp_path))
    code, result, err = run_build(
        tmp_path, "--dkms", str(tree), "--kernel", kernel_61,
        "--image", f"localhost/{prefix}/${{MOD_NAME}}:x")
    cell = by_cell(result)[("dtkhello", kernel_61)]
    # Resolved inside the tree, the link names nothing there: the module builds, and
    # the image has no firmware.
    assert code == 0 and cell["status"] == "built", err
    assert images_with_marker(cell["image"]) == []


@pytest.mark.usefixtures("toolkit_61")
def test_build_that_swaps_opt_for_a_host_link_publishes_nothing(
        tmp_path: Path, prefix: str, kernel_61: str) -> None:
    secret = host_dir(tmp_path)
    tree = hello_variant(tmp_path, "dtkhello")
    # Sourced by dkms inside the toolkit, before the cell copies its modules out: /opt
    # becomes a link to SECRET's path. In the container that path is a link back into
    # the output tree, so the copy and depmod succeed and dtk's checks find modules;
    # on the host the same link text names SECRET itself.
    conf = tree / "dkms.conf"
    conf.write_text(conf.read_text() + (
        'if [ -e /dtk-out/cell.sh ] && [ -n "$kernelver" ]; then\n'
        f'  H={secret}\n'
        '  mkdir -p "/dtk-out$H/lib/modules/$kernelver/updates/dkms" "${H%/*}"\n'
        '  ln -sfn "/dtk-out$H" "$H"\n'
        '  rm -rf /dtk-out/opt && ln -s "$H" /dtk-out/opt\n'
        'fi\n'))
    code, result, err = run_build(
        tmp_path, "--dkms", str(tree), "--kernel", kernel_61,
        "--image", f"localhost/{prefix}/${{MOD_NAME}}:x")
    cell = by_cell(result)[("dtkhello", kernel_61)]
    if buildah.image_exists(cell["image"]):
        assert images_with_marker(cell["image"]) == []
    assert cell["status"] == "failed", err
    assert "/opt" in cell["reason"]
    assert not buildah.image_exists(cell["image"])
    assert code == 1


def descendants(pid: int) -> set[int]:
    """Every process below `pid` now (children first seen in their own sessions too)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_text().split("\0")[:-1]
    except OSError:
        return []


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def slow_tree(tmp_path: Path, make: str) -> Path:
    """dtkhello whose MAKE is `make` (run by dkms inside the toolkit)."""
    tree = hello_variant(tmp_path, "dtkhello")
    conf = tree / "dkms.conf"
    lines = [line for line in conf.read_text().splitlines() if not line.startswith("MAKE[0]")]
    conf.write_text("\n".join([*lines, f'MAKE[0]="{make}"']) + "\n")
    return tree


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])  # SIGINT: Ctrl-C
@pytest.mark.usefixtures("toolkit_61")
def test_a_signal_mid_build_ends_every_child_and_leaves_nothing(
        tmp_path: Path, prefix: str, kernel_61: str, sig: signal.Signals) -> None:
    tree = slow_tree(tmp_path, "sh -c 'echo dtk-test-building; exec sleep 317'")
    image = f"localhost/{prefix}/${{MOD_NAME}}:x"
    env = dict(os.environ, DTK_STATE_DIR=str(tmp_path / "state"))
    started = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "dtk", "build", "--dkms", str(tree),
                             "--kernel", kernel_61, "--image", image, "--rebuild", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 300
        while not any(cmdline(pid) == ["sleep", "317"] for pid in descendants(proc.pid)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.5)
        children = descendants(proc.pid)
        assert children  # buildah, dkms, make, sleep: the build is running
        proc.send_signal(sig)
        signalled = time.monotonic()
        _out, err = proc.communicate(timeout=120)
        print(f"{sig.name}: dtk and its {len(children)} child processes gone in "
              f"{time.monotonic() - signalled:.1f}s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    time.sleep(1)
    assert [pid for pid in children if alive(pid)] == []
    assert not [n for _id, n in buildah.containers() if buildah.container_owner(n) == proc.pid]
    assert not buildah.image_exists(image.replace("${MOD_NAME}", "dtkhello"))
    # An interrupted build is not the package's failure: nothing is remembered.
    outcomes = paths.cache_dir() / "build" / "outcomes"
    assert not [p for p in outcomes.glob("*.log")
                if p.stat().st_mtime >= started and "dtk-test-building" in p.read_text()]


@pytest.mark.parametrize(("make", "said"), [
    # /dev/full answers every write with ENOSPC: the kernel's own "disk full".
    ("dd if=/dev/zero of=/dev/full bs=1k count=1", "No space left on device"),
    # SIGKILL, as the OOM killer sends it (dkms runs MAKE in its own shell: $$ is dkms).
    ("sh -c 'kill -KILL $$'", "Killed"),
])
@pytest.mark.usefixtures("toolkit_61")
def test_a_machine_failure_is_not_remembered_as_the_package_failing(
        tmp_path: Path, prefix: str, kernel_61: str, make: str, said: str) -> None:
    tree = slow_tree(tmp_path, make)
    args = ("--dkms", str(tree), "--kernel", kernel_61,
            "--image", f"localhost/{prefix}/${{MOD_NAME}}:x")
    for attempt, rebuild in enumerate((("--rebuild",), ())):  # forget an older run's
        code, result, err = run_build(tmp_path, *args, *rebuild)
        cell = by_cell(result)[("dtkhello", kernel_61)]
        assert code == 1 and cell["status"] == "failed", err
        assert cell["cached"] is False, attempt  # built again: the failure was not kept
        assert said in Path(cell["log"]).read_text()
        assert "not remembered" in cell["reason"]


# What a build needs of /dev (dtk/data/private-dev.sh makes no more).
BUILD_DEVICES = {"null", "zero", "full", "random", "urandom", "tty", "fd", "stdin", "stdout",
                 "stderr", "pts", "ptmx", "shm"}


@pytest.mark.usefixtures("toolkit_61")
def test_a_dkms_build_sees_no_host_device_or_process(tmp_path: Path, prefix: str,
                                                    kernel_61: str) -> None:
    """chroot isolation binds the caller's /dev and /proc into the container: root in it
    could read the host's disks or its zram swap, or every host process's command line,
    and ship them in the image."""
    tree = hello_variant(tmp_path, "dtkhello")
    conf = tree / "dkms.conf"
    conf.write_text(conf.read_text() + (
        "if [ -e /dtk-out/cell.sh ]; then\n"
        "  ls /dev > /dtk-out/opt/dev-list; ls /proc > /dtk-out/opt/proc-list\n"
        "fi\n"))
    code, result, err = run_build(tmp_path, "--dkms", str(tree), "--kernel", kernel_61,
                                  "--image", f"localhost/{prefix}/${{MOD_NAME}}:x")
    cell = by_cell(result)[("dtkhello", kernel_61)]
    assert code == 0 and cell["status"] == "built", err
    with buildah.working_container(cell["image"]) as ctr, ctr.mounted() as root:
        seen = set((root / "opt/dev-list").read_text().split())
        pids = [p for p in (root / "opt/proc-list").read_text().split() if p.isdigit()]
    # bwrap's /dev also links `core` to /proc/kcore, which the sandbox masks
    # (tests/integration/test_sandbox.py reads it).
    assert seen <= BUILD_DEVICES | {"core"}, sorted(seen - BUILD_DEVICES)
    # The build's own processes (bash, dkms, make), not the host's hundreds.
    assert str(os.getpid()) not in pids and len(pids) < 30, pids


@pytest.mark.usefixtures("toolkit_61")
def test_a_containerfile_build_sees_no_host_device_or_process(tmp_path: Path, prefix: str,
                                                             kernel_61: str) -> None:
    """The same for someone else's Containerfile: its RUN steps keep the network (KMM-style
    builds fetch sources), not the host's devices or processes."""
    context = tmp_path / "example"
    shutil.copytree(EXAMPLE.parent, context)
    containerfile = context / "Containerfile"
    containerfile.write_text(containerfile.read_text().replace(
        "FROM ${DTK_BASE}\n",
        "FROM ${DTK_BASE}\nRUN ls /dev > /dev-list && ls /proc > /proc-list\n"))
    code, result, err = run_build(tmp_path, "-f", str(containerfile), "--kernel", kernel_61,
                                  "--image", f"localhost/{prefix}/${{MOD_NAME}}:x")
    (cell,) = result["outcomes"]
    assert code == 0 and cell["status"] == "built", err
    with buildah.working_container(cell["image"]) as ctr, ctr.mounted() as root:
        seen = set((root / "dev-list").read_text().split())
        pids = [p for p in (root / "proc-list").read_text().split() if p.isdigit()]
    assert seen <= BUILD_DEVICES, sorted(seen - BUILD_DEVICES)
    assert str(os.getpid()) not in pids and len(pids) < 30, pids
