"""`dtk build --dkms` against real toolkits, real Debian *-dkms packages and real dkms.

The CLI runs as a user runs it (a child process, JSON on stdout); images are
checked by mounting them. Every image a test makes carries a unique prefix and
is removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dtk import run as runner
from dtk.driver.containerfile import STAGING_REPO
from dtk.driver.prune import plan_prune
from dtk.engine import buildah
from dtk.kernel.depindex import dep_entries
from dtk.toolkit.images import ToolkitImage

pytestmark = pytest.mark.integration

DATA = Path(__file__).parent.parent / "data" / "build"


def hello_variant(tmp_path: Path, name: str) -> Path:
    """A DKMS tree from tests/data/build/<name> (its dkms.conf, or none) around the one
    shared dtkhello.c, so the variants differ only in what they test."""
    tree = tmp_path / "src" / name
    shutil.copytree(DATA / name, tree)
    shutil.copy2(DATA / "dtkhello" / "dtkhello.c", tree)
    return tree
# busybox + kmod base (10 MB, kmod's libraries most of it) + modules + depmod's
# indexes of K's in-tree modules (~5 MB, through the KMM 'host' link); the
# toolkit itself is 1-2 GB.
MAX_IMAGE_BYTES = 17_000_000


def run_build(state: Path, *args: str) -> tuple[int, dict[str, Any], str]:
    """`dtk build ARGS --json`: exit code, parsed result, stderr (progress)."""
    env = dict(os.environ, DTK_STATE_DIR=str(state))
    proc = subprocess.run([sys.executable, "-m", "dtk", "build", *args, "--json"],
                          capture_output=True, text=True, env=env, timeout=1800, check=False)
    assert proc.stdout.strip(), f"no JSON on stdout (exit {proc.returncode}):\n{proc.stderr}"
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def by_cell(result: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["module"], o["kernel"]): o for o in result["outcomes"]}


@pytest.fixture
def prefix() -> Iterator[str]:
    """A unique image prefix; every image named under it is removed afterwards."""
    tag = f"dtk-test-{uuid.uuid4().hex[:8]}"
    yield tag
    for row in buildah.images():
        for name in row.get("names") or ():
            if tag in name:
                buildah.remove_image(name)


def no_staging_images() -> bool:
    return not any(n.startswith(STAGING_REPO) for row in buildah.images()
                   for n in row.get("names") or ())


def check_driver_image(image: str, kernel: str, modules: set[str]) -> dict[str, str]:
    """KMM's contract: modules under /opt/lib/modules/K with depmod's files, tools, labels."""
    with buildah.working_container(image) as ctr, ctr.mounted() as root:
        moddir = root / "opt/lib/modules" / kernel
        found = {p.name.split(".ko")[0]: p for p in moddir.rglob("*.ko")}
        # Where `dkms install` puts them on Debian, or the Containerfile's choice.
        assert set(found) == modules
        dep = set(dep_entries((moddir / "modules.dep.bin").read_bytes()).values())
        for name, path in found.items():  # what kmod's modprobe -d /opt reads
            assert path.relative_to(moddir).as_posix() in dep, name
            vermagic = runner.run(["modinfo", "-F", "vermagic", str(path)]).stdout
            assert vermagic.startswith(kernel + " "), vermagic
        for tool in ("sh", "cp", "mkdir", "modprobe"):
            assert (root / "bin" / tool).exists(), tool
    assert buildah.image_size(image) < MAX_IMAGE_BYTES
    labels = buildah.labels(image)
    assert labels["dtk.build.kernel"] == kernel
    return labels


def test_debian_dkms_packages_for_standard_and_rt_kernels(
        tmp_path: Path, prefix: str, toolkit_61: ToolkitImage, kernel_61: str,
        kernel_61_rt: str) -> None:
    args = ["--dkms", "v4l2loopback-dkms", "--dkms", "acpi-call-dkms", "--kernel", kernel_61,
            "--kernel", kernel_61_rt, "--image", f"localhost/{prefix}/${{MOD_NAME}}:"
            "${KERNEL_FULL_VERSION}"]
    code, result, err = run_build(tmp_path, *args)
    assert code == 0, err
    cells = by_cell(result)
    assert {c["status"] for c in cells.values()} == {"built"}, cells
    for (module, kernel), cell in cells.items():
        ko = {"v4l2loopback": "v4l2loopback", "acpi-call": "acpi_call"}[module]
        labels = check_driver_image(cell["image"], kernel, {ko})
        assert labels["dtk.build.toolkit-digest"] == toolkit_61.image_id
        assert labels["dtk.build.source-digest"].startswith("sha256:")
        assert labels["dtk.build.modules"].startswith(ko + "=")
        assert cell["modules"][0].startswith(ko + "=")

    # Unchanged inputs: every cell is a cache hit, nothing is compiled or re-tagged.
    start = time.monotonic()
    code, again, err = run_build(tmp_path, *args)
    hit_seconds = time.monotonic() - start
    assert code == 0, err
    for key, cell in by_cell(again).items():
        assert cell["cached"] is True
        assert cell["image_id"] == cells[key]["image_id"]
        assert "dkms build" not in Path(cell["log"]).read_text()
    print(f"cache-hit rebuild of 4 cells: {hit_seconds:.1f}s")


@pytest.mark.usefixtures("toolkit_61", "toolkit_612")
def test_bad_inputs_fail_their_own_cells_only(tmp_path: Path, prefix: str, kernel_61: str,
                                              kernel_612: str) -> None:
    unknown = "6.1.0-999-amd64"
    code, result, _ = run_build(
        tmp_path, "--dkms", str(DATA / "dtkold"),
        "--dkms", str(hello_variant(tmp_path, "excluded")),
        "--dkms", str(hello_variant(tmp_path, "broken")),
        "--dkms", str(hello_variant(tmp_path, "nodkmsconf")),
        "--kernel", kernel_61, "--kernel", kernel_612, "--kernel", unknown,
        "--image", f"localhost/{prefix}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}",
        "--rebuild")  # an earlier run's remembered failures must not answer for this one
    assert code == 1
    cells = by_cell(result)
    # The module compiles for 6.1 and not for 6.12: the compiler's words reach the user.
    assert cells[("dtkold", kernel_61)]["status"] == "built"
    failed = cells[("dtkold", kernel_612)]
    assert failed["status"] == "failed"
    assert any("uses_an_api_removed_after_6_1" in line for line in failed["tail"])
    assert "uses_an_api_removed_after_6_1" in Path(failed["log"]).read_text()
    for kernel in (kernel_61, kernel_612):
        excluded = cells[("dtkexcluded", kernel)]
        assert excluded["status"] == "excluded"
        assert excluded["reason"] == (f'dtkexcluded: BUILD_EXCLUSIVE_KERNEL="^5\\." does not '
                                      f"match kernel {kernel}")
        broken = cells[("dtkbroken", kernel)]
        assert broken["status"] == "failed"
        assert any("'DEST_MODULE_LOCATION' does not begin with" in t for t in broken["tail"])
        missing = cells[("nodkmsconf", kernel)]
        assert missing["status"] == "failed"
        assert "no dkms.conf" in missing["reason"]
    for module in ("dtkold", "dtkexcluded", "dtkbroken", "nodkmsconf"):
        cell = cells[(module, unknown)]
        assert cell["status"] == "failed"
    assert "is not in the configured archive" in cells[("dtkold", unknown)]["reason"]
    assert not failed["cached"]
    # The same inputs again: dkms's failure is remembered, not compiled again; --rebuild
    # compiles it again.
    again_args = ("--dkms", str(DATA / "dtkold"), "--kernel", kernel_612, "--image",
                  f"localhost/{prefix}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}")
    code, again, _ = run_build(tmp_path, *again_args)
    remembered = by_cell(again)[("dtkold", kernel_612)]
    assert code == 1 and remembered["cached"] and remembered["status"] == "failed"
    assert remembered["reason"] == failed["reason"] and remembered["tail"] == failed["tail"]
    assert "uses_an_api_removed_after_6_1" in Path(remembered["log"]).read_text()
    code, rebuilt, _ = run_build(tmp_path, *again_args, "--rebuild")
    assert code == 1 and not by_cell(rebuilt)[("dtkold", kernel_612)]["cached"]
    # Nothing that failed or was excluded is tagged, and no staging image is left.
    for cell in cells.values():
        assert buildah.image_exists(cell["image"]) == (cell["status"] == "built"), cell
    assert no_staging_images()


@pytest.mark.usefixtures("toolkit_61")
def test_build_depends_packages_share_one_image(tmp_path: Path, prefix: str,
                                                kernel_61: str) -> None:
    # dtkdepuser links against a symbol dtkdepbase exports: it builds only after it.
    code, result, err = run_build(
        tmp_path, "--dkms", str(DATA / "depuser"), "--dkms", str(DATA / "depbase"),
        "--kernel", kernel_61, "--image", f"localhost/{prefix}/${{MOD_NAME}}:x")
    assert code == 0, err
    (cell,) = result["outcomes"]
    assert cell["module"] == "dtkdepuser"
    assert cell["modules"] == ["dtkdepbase=1.0", "dtkdepuser=1.0"]
    labels = check_driver_image(cell["image"], kernel_61, {"dtkdepbase", "dtkdepuser"})
    assert labels["dtk.build.packages"] == "dtkdepbase=1.0,dtkdepuser=1.0"


@pytest.mark.usefixtures("toolkit_61")
def test_package_dependencies_are_installed_as_apt_would(tmp_path: Path, prefix: str,
                                                         kernel_61: str) -> None:
    # iptables-netflow-dkms's build runs pkg-config against libxtables-dev, which its
    # Depends pull in on a host; without them dkms fails ("Can not find iptables").
    code, result, err = run_build(tmp_path, "--dkms", "iptables-netflow-dkms",
                                  "--kernel", kernel_61,
                                  "--image", f"localhost/{prefix}/${{MOD_NAME}}:x")
    assert code == 0, err
    (cell,) = result["outcomes"]
    assert cell["status"] == "built", cell
    assert cell["modules"] == ["ipt_NETFLOW=2.6"]
    labels = check_driver_image(cell["image"], kernel_61, {"ipt_NETFLOW"})
    # Built in the toolkit plus a cached layer with pkg-config and libxtables-dev.
    assert labels["dtk.build.toolkit"].startswith("localhost/dtk-toolkit-extras:")
    assert "pkg-config" in err


@pytest.mark.usefixtures("toolkit_61")
def test_changed_inputs_rebuild_and_prune_finds_the_old_image(
        tmp_path: Path, prefix: str, kernel_61: str, monkeypatch: pytest.MonkeyPatch) -> None:
    args = ["--dkms", str(DATA / "dtkhello"), "--kernel", kernel_61,
            "--image", f"localhost/{prefix}/${{MOD_NAME}}:x"]
    code, first, err = run_build(tmp_path, *args, "--build-arg", "FLAVOUR=a")
    assert code == 0, err
    code, second, err = run_build(tmp_path, *args, "--build-arg", "FLAVOUR=b")
    assert code == 0, err
    (old,), (new,) = first["outcomes"], second["outcomes"]
    assert new["cached"] is False and new["image_id"] != old["image_id"]
    monkeypatch.setenv("DTK_STATE_DIR", str(tmp_path))  # the builds' records of what they made
    removals = {r.image_id: r for r in plan_prune(everything=False)}
    stale = next(r for i, r in removals.items() if old["image_id"].startswith(i))
    assert stale.why == "superseded by a rebuild (untagged)"
    assert not any(new["image_id"].startswith(i) for i in removals)
    buildah.remove_image(stale.image_id)


@pytest.mark.usefixtures("toolkit_61")
def test_dkms_conf_never_runs_on_the_host(tmp_path: Path, prefix: str, kernel_61: str) -> None:
    """A dkms.conf is someone else's bash: sourcing it must neither write host files nor
    reach services on the host's network (chroot isolation shares it). This one tries
    both, while dtk plans and while dkms builds."""
    tree = hello_variant(tmp_path, "dtkhello")
    marker = tmp_path / "written-by-dkms-conf"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    conf = tree / "dkms.conf"
    conf.write_text(conf.read_text() + f"touch {marker}\n"
                    f"(echo hello >/dev/tcp/127.0.0.1/{port}) 2>/dev/null\n")
    try:
        code, result, stderr = run_build(
            tmp_path, "--dkms", str(tree), "--kernel", kernel_61,
            "--image", f"localhost/{prefix}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}")
        assert code == 0, stderr
        assert by_cell(result)[("dtkhello", kernel_61)]["status"] == "built"
        assert not marker.exists()
        with pytest.raises(TimeoutError):
            listener.accept()  # neither planning nor the build had a network to reach it
    finally:
        listener.close()


def test_dkms_names_that_would_leave_their_paths_are_refused(tmp_path: Path, prefix: str,
                                                              kernel_61: str) -> None:
    tree = hello_variant(tmp_path, "dtkhello")
    conf = tree / "dkms.conf"
    conf.write_text(conf.read_text().replace('PACKAGE_VERSION="0.3"',
                                             'PACKAGE_VERSION="0.3/../../../../etc"'))
    code, result, _ = run_build(
        tmp_path, "--dkms", str(tree), "--kernel", kernel_61,
        "--image", f"localhost/{prefix}/${{MOD_NAME}}:${{KERNEL_FULL_VERSION}}")
    assert code == 1
    (cell,) = result["outcomes"]
    assert cell["status"] == "failed"
    assert "PACKAGE_VERSION='0.3/../../../../etc'" in cell["reason"]
