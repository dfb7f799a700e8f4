"""The node CLI follows dtk's own rules (issue 28 §3, §4): --root fences this machine,
IMAGE is checked where it is declared, every answer says what was done."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from dtk.cli.main import run_cli
from dtk.errors import DtkError
from dtk.node import declare
from dtk.node.layout import Layout

K = "6.1.0-57-amd64"
MODULE = """\
apiVersion: kmm.sigs.x-k8s.io/v1beta1
kind: Module
metadata: {name: drv, namespace: %s}
spec:
  selector: {}
  moduleLoader:
    container:
      modprobe: {moduleName: drv}
      kernelMappings:
      - literal: %s
        containerImage: reg.example/drv:%s
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = run_cli(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.mark.parametrize("argv", [("node", "load"), ("node", "unload"),
                                  ("node", "prepare"), ("node", "status"),
                                  ("node", "add", "reg.example/x:1", "--module", "m")])
def test_root_never_acts_on_this_machines_kernel(capsys: pytest.CaptureFixture[str],
                                                  root: Path, argv: tuple[str, ...]) -> None:
    """Under --root, nothing runs modprobe or writes /sys, and `uname -r` (this machine's
    kernel) is never taken for the root's: load/unload are refused, the others need
    --kernel."""
    code, text = run(capsys, *argv, "--root", str(root))
    assert code == 2, text
    assert "--root" in text and "Traceback" not in text
    assert "--kernel" in text or "not the running machine" in text
    assert not (root / "etc/dtk").exists()


def test_a_root_that_does_not_exist_is_not_made(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    code, text = run(capsys, "node", "add", "reg.example/x:1", "--module", "m", "--kernel", K,
                     "--root", str(tmp_path / "nonexistent/x"))
    assert code == 2 and "does not exist" in text
    assert not (tmp_path / "nonexistent").exists()


@pytest.mark.parametrize(("image", "said"), [
    ("containers-storage:localhost/drv:1", "cannot read containers-storage images"),
    ("docker-daemon:drv:1", "cannot read docker-daemon images"),
    ("localhost/dtk-driver/drv:6.1.0-57-amd64", "names no registry"),
    ("oci-archive:img/x.tar", "absolute path as the node sees it"),
])
def test_images_a_host_cannot_fetch_are_refused_where_declared(
        capsys: pytest.CaptureFixture[str], root: Path, image: str, said: str) -> None:
    code, text = run(capsys, "node", "add", image, "--module", "drv", "--kernel", K,
                     "--root", str(root))
    assert code == 2, text
    assert said in text and "oci-archive:" in text, text  # the fix names the archive way
    assert not (root / "etc/dtk").exists()


def test_an_archive_is_declared_by_its_absolute_path_and_must_be_there(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook and the boot unit run from /: on the machine `oci-archive:img/a.tar` is
    stored absolute, and one that is not there is refused (checked here without writing:
    the machine's own /etc is never a test's)."""
    (tmp_path / "img").mkdir()
    monkeypatch.chdir(tmp_path)
    assert declare.image_source("oci-archive:img/a.tar") == f"oci-archive:{tmp_path}/img/a.tar"
    machine = Layout(Path("/"))
    with pytest.raises(DtkError, match="does not exist") as info:
        declare.check_local_image(machine, "oci-archive:/nonexistent/x.tar", K)
    assert "skopeo copy containers-storage:IMAGE oci-archive:/nonexistent/x.tar" in str(
        info.value.hint)


def test_under_root_an_archive_may_arrive_later(capsys: pytest.CaptureFixture[str],
                                                root: Path) -> None:
    """A root being prepared (an image build) may get its archives on a disk mounted at
    boot: declared, with a note."""
    code, text = run(capsys, "node", "add", "oci-archive:/mnt/images/x.tar", "--module", "drv",
                     "--kernel", K, "--root", str(root))
    assert code == 0, text
    assert f"/mnt/images/x.tar is not under {root} yet" in text


def test_modules_of_one_name_in_two_namespaces_are_an_error(
        capsys: pytest.CaptureFixture[str], root: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(MODULE % ("team-a", K, "1"))
    b.write_text(MODULE % ("team-b", K, "2"))
    code, text = run(capsys, "node", "add", "-f", str(a), "-f", str(b), "--kernel", K,
                     "--root", str(root))
    assert code == 2, text
    assert "two Modules are named drv" in text and "team-a" in text and "team-b" in text
    assert not (root / "etc/dtk/modules").exists()


def test_image_credentials_and_tls_as_on_every_other_command(
        capsys: pytest.CaptureFixture[str], root: Path, tmp_path: Path) -> None:
    """--authfile keeps only IMAGE's registry's entry (0600); --no-tls-verify becomes the
    Module's registryTLS; without it a loopback registry is spoken to as dtk always does."""
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {"127.0.0.1:5000": {"auth": "dTpw"},
                                          "other.example": {"auth": "b3RoZXI6cA=="}}}))
    code, text = run(capsys, "node", "add", "127.0.0.1:5000/drv:${KERNEL_FULL_VERSION}",
                     "--module", "drv", "--authfile", str(auth), "--no-tls-verify",
                     "--kernel", K, "--root", str(root))
    assert code == 0, text
    decl = declare.find(Layout(root), "drv")
    secret = decl.secret()
    assert secret is not None
    assert json.loads(secret.data[".dockerconfigjson"]) == {
        "auths": {"127.0.0.1:5000": {"auth": "dTpw"}}}
    assert decl.resolve(K).registry_tls.tls_verify is False
    stored = yaml.safe_load_all(decl.path.read_text())
    assert "b3RoZXI6cA==" not in json.dumps(list(stored))
    assert base64.b64encode(b"other").decode() not in decl.path.read_text()
    code, text = run(capsys, "node", "add", "127.0.0.1:5000/x:1", "--module", "x",
                     "--kernel", K, "--root", str(root))
    assert code == 0, text
    assert declare.find(Layout(root), "x").resolve(K).registry_tls.tls_verify is None


def test_answers_say_what_was_done(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    assert run(capsys, "node", "add", "reg.example/x:1", "--module", "drv", "--kernel", K,
               "--root", str(root))[0] == 0
    code, text = run(capsys, "node", "status", "--kernel", K, "--root", str(root))
    assert code == 1, text  # a module that will not load (not prepared)
    assert "not prepared" in text
    code, text = run(capsys, "node", "clean", "--kernel", "6.1.0-1-amd64", "--root", str(root))
    assert code == 0 and "nothing was prepared for 6.1.0-1-amd64" in text
    code, text = run(capsys, "node", "remove", "drv", "--root", str(root))
    assert code == 0 and "nothing unloaded" in text, text


def test_a_declaration_that_no_longer_reads_is_listed_as_such(
        capsys: pytest.CaptureFixture[str], root: Path) -> None:
    for name in ("good", "bad"):
        assert run(capsys, "node", "add", "reg.example/x:1", "--module", name, "--kernel", K,
                   "--root", str(root))[0] == 0
    (root / "etc/dtk/modules/bad.yaml").write_text("kind: Module\nspec: [")
    code, text = run(capsys, "node", "list", "--root", str(root))
    assert code == 1, text
    assert "good" in text and "does not read" in text
    code, text = run(capsys, "node", "status", "--kernel", K, "--root", str(root))
    assert code == 1 and "the declaration does not read: bad.yaml" in text, text


@pytest.mark.parametrize("columns", [120, 80])
def test_every_node_line_fits_the_terminal(capsys: pytest.CaptureFixture[str], root: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           columns: int) -> None:
    """The tour's 189-column `prepare` line and the status table: long reasons wrapped or
    cut (with the pointer to --json), never wider than $COLUMNS."""
    monkeypatch.setenv("COLUMNS", str(columns))
    name = "a-driver-with-a-long-name"  # KMM: name and namespace at most 41 together
    image = ("oci-archive:/mnt/images/" + "a-very-long-archive-name-" * 4
             + "${KERNEL_FULL_VERSION}.tar")
    assert run(capsys, "node", "add", image, "--module", "drv", "--name", name,
               "--kernel", K, "--root", str(root))[0] == 0
    lines = []
    for argv in (("prepare", "--kernel", K), ("status", "--kernel", K), ("list",),
                 ("keys",), ("clean", "--kernel", K)):
        lines += run(capsys, "node", *argv, "--root", str(root))[1].splitlines()
    assert any(name in line for line in lines)
    wide = [line for line in lines if len(line) > columns]
    assert wide == [], wide


def test_an_error_names_the_users_input_not_a_temporary_file(
        capsys: pytest.CaptureFixture[str], root: Path) -> None:
    """The tour saw /tmp/dtk-node-*/image.yaml in a refusal of `add IMAGE`."""
    code, text = run(capsys, "node", "add", "reg.example/x:1", "--module", "drv", "--name",
                     "a-driver-with-a-rather-long-declaration-name", "--kernel", K,
                     "--root", str(root))
    assert code == 2, text
    assert "at most 41" in text and "IMAGE" in text and "/tmp/" not in text, text
