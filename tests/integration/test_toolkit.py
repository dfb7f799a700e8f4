"""Toolkit images built with real buildah from the real archive.

Two kernels of different ABIs: the newest 6.1 with its RT sibling, and the
oldest 6.1 ABI on its own. Their base and tools layers must be the same
layers; a module must compile inside for each kernel with the right vermagic.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from dtk import kernel as kern
from dtk.distro.debian import DebianArchive
from dtk.engine import buildah, skopeo
from dtk.errors import DtkError
from dtk.progress import NullMonitor
from dtk.toolkit import plan as tplan
from dtk.toolkit.images import ToolkitImage, build, ensure_toolkit
from dtk.toolkit.query import inspect_toolkit

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).parents[2] / "examples/dtk-example"


@pytest.fixture(scope="module")
def toolkit_old(archive: DebianArchive, kernel_61_old: str) -> ToolkitImage:
    return ensure_toolkit(kernel_61_old, "none", distro=archive)


def test_release_json_labels_and_exact_versions(archive: DebianArchive,
                                                toolkit_61: ToolkitImage) -> None:
    info = inspect_toolkit(toolkit_61.name)
    assert info.release["KERNEL_VERSION"] == toolkit_61.kernel
    assert info.release["RT_KERNEL_VERSION"] == toolkit_61.rt_kernel
    assert info.release["OS_ID"] == "debian" and info.release["ARCH"] == "amd64"
    assert info.release["GCC_VERSION"].startswith("12.")
    assert info.labels["kernel-version"] == toolkit_61.kernel
    assert info.labels["kernel-rt-version"] == toolkit_61.rt_kernel
    assert info.labels["name"] == "driver-toolkit"
    assert info.labels["org.opencontainers.image.created"].endswith("Z")
    installed = {name: version for name, version, _ in info.packages}
    plan = tplan.plan_toolkit(archive, toolkit_61.kernel)
    for kernel in (plan.kernel, plan.rt):
        assert kernel is not None
        for package in kernel.packages:
            assert installed[package.name] == package.version, package.name
    for tool in ("gcc-12", "dwarves", "kmod", "libelf-dev", "abigail-tools", "mokutil",
                 "openssl", "bc", "bison", "flex"):
        assert tool in installed


def test_toolkits_share_base_and_tools_layers(toolkit_61: ToolkitImage,
                                              toolkit_old: ToolkitImage) -> None:
    a = buildah.diff_ids(toolkit_61.name)
    b = buildah.diff_ids(toolkit_old.name)
    shared = 0
    while shared < min(len(a), len(b)) and a[shared] == b[shared]:
        shared += 1
    # base (1 layer) + tools (1 layer) are shared; each kernel adds its own layers.
    assert shared == 2, (a, b)
    assert a[2] != b[2]


@pytest.mark.parametrize("which", ["standard", "rt", "old"])
def test_module_compiles_with_the_right_vermagic(which: str, toolkit_61: ToolkitImage,
                                                 toolkit_old: ToolkitImage) -> None:
    image, release = {
        "standard": (toolkit_61, toolkit_61.kernel),
        "rt": (toolkit_61, toolkit_61.rt_kernel),
        "old": (toolkit_old, toolkit_old.kernel),
    }[which]
    assert release
    with buildah.working_container(image.name) as ctr:
        ctr.copy_in(EXAMPLE / "dtk_example.c", "/build/")
        ctr.copy_in(EXAMPLE / "Makefile", "/build/")
        ctr.run(["make", "-C", f"/usr/src/linux-headers-{release}", "M=/build", "modules"])
        vermagic = ctr.run(["modinfo", "-F", "vermagic", "/build/dtk_example.ko"]).stdout
    words = vermagic.split()
    assert words[0] == release
    assert "modversions" in words
    assert ("preempt_rt" in words) == (kern.parse(release).flavour is kern.Flavour.RT)


def test_rebuild_is_a_no_op(archive: DebianArchive, toolkit_61: ToolkitImage) -> None:
    again = ensure_toolkit(toolkit_61.kernel, "auto", distro=archive)
    assert again.image_id == toolkit_61.image_id


def test_version_gate_fails_without_the_kernel(archive: DebianArchive,
                                               toolkit_61: ToolkitImage) -> None:
    """The gate's shell, run where no kernel is installed (the tools image), must refuse."""
    plan = tplan.plan_toolkit(archive, toolkit_61.kernel)
    gate = tplan._version_gate(plan).split("RUN ", 1)[1].replace("\\\n", "\n")
    with buildah.working_container(plan.tools_tag) as ctr:
        result = ctr.run(["/bin/sh", "-c", gate], check=False)
    assert result.returncode != 0
    assert "dtk gate: linux-" in result.stdout
    assert "is not installed" in result.stdout


def test_failed_build_leaves_no_tag(archive: DebianArchive, toolkit_61: ToolkitImage) -> None:
    plan = tplan.plan_toolkit(archive, toolkit_61.kernel, "none")
    bogus = dataclasses.replace(plan.kernel.packages[0], version="0.0-0")
    kernel = dataclasses.replace(plan.kernel, packages=(bogus, *plan.kernel.packages[1:]))
    broken = dataclasses.replace(plan, kernel=kernel)
    tag = "localhost/driver-toolkit:dtk-test-broken"
    buildah.remove_image(tag)
    with pytest.raises(DtkError, match="failed"):
        build(_retagged(broken, tag), NullMonitor())
    assert not buildah.image_exists(tag)


def _retagged(plan: tplan.ToolkitPlan, tag: str) -> tplan.ToolkitPlan:
    """The same plan under a throwaway tag, so a failure cannot touch real toolkits."""

    class Retagged(tplan.ToolkitPlan):
        @property
        def tag(self) -> str:
            return tag

    return Retagged(**{f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)})


def test_unknown_and_host_kernels_are_clear_errors() -> None:
    for release in ("6.1.0-99-amd64", "6.18.44-fc-v657"):
        result = subprocess.run([sys.executable, "-m", "dtk", "toolkit", "build",
                                 "--kernel", release],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 2
        assert "is not in the configured archive" in result.stderr
        assert "closest available: " in result.stderr
        assert "Traceback" not in result.stderr


def test_push_to_a_loopback_registry(registry: str, toolkit_612: ToolkitImage) -> None:
    dest = f"{registry}/dtk/driver-toolkit:{kern.normalize(toolkit_612.kernel)}"
    digest = skopeo.push(toolkit_612.name, dest)
    remote = skopeo.remote_inspect(dest)
    assert remote is not None and remote["Digest"] == digest
    assert remote["Labels"]["kernel-version"] == toolkit_612.kernel
    assert remote["Labels"]["kernel-rt-version"] == toolkit_612.rt_kernel


def _untagged_image(labels: dict[str, str]) -> str:
    """An image committed under a name, then superseded (so left untagged), as a rebuild
    leaves one; returns its id."""
    name = f"localhost/dtk-test-prune-{uuid.uuid4().hex[:8]}:x"
    with buildah.working_container("scratch") as ctr:
        for key, value in labels.items():
            ctr.config("--label", f"{key}={value}")
        first = ctr.commit(name)
    with buildah.working_container("scratch") as ctr:
        ctr.config("--label", "dtk-test=superseding")
        ctr.commit(name)
    buildah.remove_image(name)
    return first


def test_prune_removes_only_what_dtk_made(tmp_path: Path) -> None:
    """`dtk toolkit prune` takes untagged toolkit images and leaves the user's own untagged
    images (their build caches) alone: `buildah rmi --prune` took both."""
    ours = _untagged_image({tplan.KIND_LABEL: "toolkit"})
    theirs = _untagged_image({"maintainer": "someone else"})
    try:
        dry = subprocess.run([sys.executable, "-m", "dtk", "toolkit", "prune", "--dry-run",
                              "--json"], capture_output=True, text=True, timeout=600,
                             check=True)
        listed = {r["image_id"]: r for r in json.loads(dry.stdout)["removed"]}
        assert ours in listed and listed[ours]["why"].startswith("untagged toolkit image")
        assert theirs not in listed
        assert isinstance(listed[ours]["size"], int)
        assert buildah.image_exists(ours)  # a dry run removes nothing
        subprocess.run([sys.executable, "-m", "dtk", "toolkit", "prune"], capture_output=True,
                       text=True, timeout=600, check=True)
        assert not buildah.image_exists(ours)
        assert buildah.image_exists(theirs)
    finally:
        for image in (ours, theirs):
            buildah.remove_image(image)


def test_list_and_inspect_json_share_names_and_types(toolkit_61: ToolkitImage) -> None:
    """Scripts read sizes as bytes, full image ids, ISO-8601 times, and the same field
    names from `toolkit list` and `toolkit inspect`."""
    listed = json.loads(subprocess.run([sys.executable, "-m", "dtk", "toolkit", "list",
                                        "--json"], capture_output=True, text=True,
                                       timeout=300, check=True).stdout)
    row = next(r for r in listed if r["name"] == toolkit_61.name)
    inspected = json.loads(subprocess.run([sys.executable, "-m", "dtk", "toolkit", "inspect",
                                           toolkit_61.name, "--json"], capture_output=True,
                                          text=True, timeout=300, check=True).stdout)
    for key, value in row.items():
        assert type(inspected[key]) is type(value), key
    assert row["image_id"] == inspected["image_id"] == toolkit_61.image_id
    assert len(row["image_id"]) == 64 and isinstance(row["size"], int) and row["size"] > 10**9
    for created in (row["created"], inspected["created"]):
        assert datetime.datetime.fromisoformat(created.replace("Z", "+00:00")[:26] + "+00:00")
