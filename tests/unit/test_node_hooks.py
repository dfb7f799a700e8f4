"""The kernel hooks and dtk-node.service as the Debian Kernel Handbook wants hooks
(§8.1: stdin closed, every line on stderr) and as a host owner needs them: never a
non-zero exit, never silent when dtk cannot run, and running the dtk that wrote them
even where it is not on PATH (a virtual environment).

The hooks run for real under sh, with the real dtk where dtk's behaviour is the point.
Where only the hook's own conduct is (its file descriptors, whether it calls dtk at all),
a probe stands in for dtk: a shell line that records what it was given.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dtk.node import hooks
from dtk.node.layout import Layout

K = "6.1.0-99-amd64"
POSTINST, POSTRM = "node-postinst.sh", "node-postrm.sh"
THIS_DTK = [sys.executable, "-m", "dtk"]
NO_VENV_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"  # what apt's and systemd's children get


def write_hook(tmp_path: Path, name: str, argv: list[str]) -> Path:
    path = tmp_path / name
    path.write_text(hooks.rendered(name, argv))
    path.chmod(0o755)
    return path


def run_hook(path: Path, *args: str, root: Path, stdin: str = "",
             maint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": NO_VENV_PATH, "DTK_NODE_ROOT": str(root), "HOME": str(root)}
    if maint is not None:
        env["DEB_MAINT_PARAMS"] = maint
    return subprocess.run(["sh", str(path), *args], input=stdin, env=env, cwd=root,
                          capture_output=True, text=True, timeout=300, check=False)


def probe(record: Path) -> list[str]:
    """A stand-in for dtk: records its arguments and file descriptors, prints a line on
    its stdout and copies its stdin to it."""
    script = ('fds=$(readlink /proc/$$/fd/0 /proc/$$/fd/1 /proc/$$/fd/2); '
              'printf "%s\\n%s\\n" "$*" "$fds" > "$0"; echo probe-stdout; cat')
    return ["sh", "-c", script, str(record)]


def declared_root(tmp_path: Path) -> Path:
    """A root with one declaration, made by the real `dtk node add` (its image is an
    archive that does not exist: fetching it fails, as a registry that is down does)."""
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run([*THIS_DTK, "node", "add", "oci-archive:/nonexistent.tar", "--module",
                    "foo", "--kernel", K, "--root", str(root)], check=True,
                   capture_output=True, timeout=120)
    return root


def test_a_hook_never_reads_stdin_and_writes_only_to_stderr(tmp_path: Path) -> None:
    root = declared_root(tmp_path)
    record = tmp_path / "record"
    hook = write_hook(tmp_path, POSTINST, probe(record))
    done = run_hook(hook, K, root=root, stdin="an answer meant for debconf\n")
    assert done.returncode == 0
    assert done.stdout == ""
    assert "probe-stdout" in done.stderr and "debconf" not in done.stderr
    args, fd0, fd1, fd2 = record.read_text().splitlines()
    assert args == f"node prepare --kernel {K}"
    assert fd0 == "/dev/null" and fd1 == fd2


@pytest.mark.parametrize("argv", [
    ["/nonexistent/bin/dtk"],  # removed, or installed somewhere else
    [sys.executable, "-I", "-S", "-m", "dtk"],  # a Python that cannot import dtk
], ids=["missing", "cannot-import"])
def test_the_postinst_hook_says_so_when_dtk_cannot_run(tmp_path: Path,
                                                       argv: list[str]) -> None:
    root = declared_root(tmp_path)
    hook = write_hook(tmp_path, POSTINST, argv)
    done = run_hook(hook, K, root=root)
    assert done.returncode == 0 and done.stdout == ""
    (said,) = [line for line in done.stderr.splitlines() if line.startswith("dtk-node: ")]
    assert K in said and ("NOT prepared" in said or "could not prepare" in said), said


def test_the_hooks_run_the_dtk_that_wrote_them_where_it_is_not_on_path(
        tmp_path: Path) -> None:
    """A dtk in a virtual environment: the hook runs it (through its own Python), with
    PATH as apt gives it, and passes on what dtk says, on stderr."""
    assert hooks.command(Layout(Path("/"))) == THIS_DTK
    root = declared_root(tmp_path)
    hook = write_hook(tmp_path, POSTINST, hooks.command(Layout(Path("/"))))
    done = run_hook(hook, K, root=root)
    assert done.returncode == 0 and done.stdout == ""
    assert f"dtk node: foo for {K}: NOT READY: fetching oci-archive:/nonexistent.tar" \
        in done.stderr, done.stderr
    assert (root / f"var/lib/dtk/kernels/{K}/foo.json").is_file()
    assert not (root / ".cache").exists()  # the cache is /var/cache/dtk's, not a home's


@pytest.mark.parametrize("name", [POSTINST, POSTRM])
@pytest.mark.parametrize("release", ["", "../..", "6.1 0", "6.1.0-1/../../etc"])
def test_a_release_that_is_not_one_reaches_no_path_and_no_dtk(
        tmp_path: Path, name: str, release: str) -> None:
    root = declared_root(tmp_path)
    record = tmp_path / "record"
    done = run_hook(write_hook(tmp_path, name, probe(record)), release, root=root)
    assert done.returncode == 0 and done.stdout == ""
    assert f"dtk-node: ignored: '{release}' is not a kernel release" in done.stderr
    assert not record.exists()


def test_nothing_declared_means_nothing_run_and_nothing_said(tmp_path: Path) -> None:
    record = tmp_path / "record"
    for name in (POSTINST, POSTRM):
        done = run_hook(write_hook(tmp_path, name, probe(record)), K, root=tmp_path)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not record.exists()


def test_postrm_forgets_a_kernel_when_its_package_goes_not_when_it_is_upgraded(
        tmp_path: Path) -> None:
    root = declared_root(tmp_path)
    prepared = root / f"var/lib/dtk/kernels/{K}"
    prepared.mkdir(parents=True)
    record = tmp_path / "record"
    done = run_hook(write_hook(tmp_path, POSTRM, probe(record)), K, root=root,
                    maint="'upgrade' '6.1.158-1'")
    assert done.returncode == 0 and not record.exists()
    done = run_hook(write_hook(tmp_path, POSTRM, THIS_DTK), K, root=root, maint="'remove'")
    assert done.returncode == 0 and done.stdout == "", done.stderr
    assert not prepared.exists()


def test_the_unit_runs_the_dtk_that_wrote_it(tmp_path: Path) -> None:
    """systemd's own check of the unit (systemd-analyze verify: every command it would
    run is executable), then that command run as systemd would, outside the venv."""
    unit = tmp_path / hooks.UNIT
    unit.write_text(hooks.rendered(hooks.UNIT, THIS_DTK))
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                            capture_output=True, text=True, timeout=120, check=False,
                            env={"PATH": NO_VENV_PATH})
    assert verify.returncode == 0, verify.stderr
    (line,) = [x for x in unit.read_text().splitlines() if x.startswith("ExecStart=")]
    argv = shlex.split(line.removeprefix("ExecStart="))
    assert argv == [*THIS_DTK, "node", "load"]
    empty = tmp_path / "empty"
    empty.mkdir()
    # `load` itself acts on the running kernel (refused under --root): the same dtk,
    # run as systemd would run it, answers for the empty root.
    listed = subprocess.run([*argv[:-2], "node", "list", "--root", str(empty), "--json"],
                            capture_output=True, text=True, env={"PATH": NO_VENV_PATH},
                            cwd=empty, timeout=120, check=False)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []
    packaged = hooks.rendered(hooks.UNIT, [hooks.PACKAGED_DTK])
    assert "ExecStart=/usr/bin/dtk node load\n" in packaged
    assert "StandardError=journal+console\n" in packaged  # a failure is seen at boot


def test_nothing_is_written_where_the_package_provides_the_hooks(tmp_path: Path) -> None:
    unit = tmp_path / "lib/systemd/system" / hooks.UNIT
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\n")
    assert hooks.install(Layout(tmp_path)) == []
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "lib", "lib/systemd", "lib/systemd/system", f"lib/systemd/system/{hooks.UNIT}"]


def test_install_hooks_reloads_systemd_only_where_systemd_runs_the_root(
        tmp_path: Path) -> None:
    """`dtk node install-hooks` on this machine's own root, in a mount namespace whose
    /etc/kernel, /etc/systemd/system and /run are empty tmpfs, with /run/systemd/system
    made as a booted systemd makes it. systemd itself cannot run here, so a systemctl on
    PATH records what it is asked; then with --root, where it must not be asked."""
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "calls"
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    (fake / "systemctl").chmod(0o755)
    other = tmp_path / "other"
    other.mkdir()  # --root names an existing root (it is never made as a side effect)
    script = (
        "set -e; for d in /etc/kernel /etc/systemd/system /run; do "
        "mount -t tmpfs dtk-test $d; done; mkdir -p /run/systemd/system; "
        f"{shlex.join(THIS_DTK)} node install-hooks --json; "
        f"{shlex.join(THIS_DTK)} node install-hooks --root {other} --json >/dev/null; "
        "head -n 20 /etc/kernel/postinst.d/dtk-node | grep '^dtk()'")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           script], capture_output=True, text=True, timeout=120,
                          check=False, env=dict(os.environ, PATH=f"{fake}:{NO_VENV_PATH}"))
    assert done.returncode == 0, done.stderr
    written, hook_line = done.stdout.rsplit("]", 1)
    assert "/etc/kernel/postinst.d/dtk-node" in json.loads(written + "]")
    assert shlex.join(THIS_DTK) in hook_line
    assert calls.read_text().splitlines() == ["daemon-reload"]
    assert (other / "etc/kernel/postinst.d/dtk-node").is_file()
