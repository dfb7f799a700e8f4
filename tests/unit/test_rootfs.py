"""Image paths resolved inside the image; KMM's filesToSign spellings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dtk import rootfs, rootwrite
from dtk.errors import DtkError
from dtk.kmod import image


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    mods = r / "opt/lib/modules/6.1.0-56-amd64"
    mods.mkdir(parents=True)
    (mods / "a.ko").write_bytes(b"a")
    (mods / "extra").mkdir()
    (mods / "extra/b.ko.xz").write_bytes(b"b")
    (mods / "link.ko").symlink_to("/opt/lib/modules/6.1.0-56-amd64/a.ko")  # absolute, in-image
    (mods / "host").symlink_to("/host/lib/modules/6.1.0-56-amd64")  # KMM's pattern, dangling
    (tmp_path / "secret").write_text("host file")
    return r


def test_absolute_links_resolve_inside_the_image(root: Path) -> None:
    found = rootfs.resolve(root, "/opt/lib/modules/6.1.0-56-amd64/link.ko")
    assert found == root / "opt/lib/modules/6.1.0-56-amd64/a.ko"
    assert rootfs.resolve(root, "/opt/lib/modules/6.1.0-56-amd64/host") is None


def test_links_climbing_out_of_the_root_are_refused(root: Path) -> None:
    mods = root / "opt/lib/modules/6.1.0-56-amd64"
    (mods / "evil.ko").symlink_to("../../../../../secret")
    with pytest.raises(rootfs.UnsafePathError, match="climbs above the image root"):
        rootfs.resolve(root, "/opt/lib/modules/6.1.0-56-amd64/evil.ko")
    with pytest.raises(rootfs.UnsafePathError):
        list(rootfs.walk_files(root, "/opt/lib/modules"))
    with pytest.raises(rootfs.UnsafePathError):
        rootfs.resolve(root, "/../secret")


def test_symlink_loops_end(root: Path) -> None:
    loop = root / "opt/loop"
    loop.symlink_to("/opt/loop")
    with pytest.raises(rootfs.UnsafePathError, match="too many symlinks"):
        rootfs.resolve(root, "/opt/loop")


def test_walk_lists_files_and_resolved_file_links(root: Path) -> None:
    inner = [i for i, _h in rootfs.walk_files(root, "/opt/lib/modules")]
    assert inner == ["/opt/lib/modules/6.1.0-56-amd64/a.ko",
                     "/opt/lib/modules/6.1.0-56-amd64/link.ko",
                     "/opt/lib/modules/6.1.0-56-amd64/extra/b.ko.xz"]


def test_glob_matches_per_component(root: Path) -> None:
    hits = rootfs.glob(root, "/opt/lib/modules/*/*.ko")
    assert [i for i, _ in hits] == ["/opt/lib/modules/6.1.0-56-amd64/a.ko",
                                    "/opt/lib/modules/6.1.0-56-amd64/link.ko"]
    assert rootfs.glob(root, "/opt/lib/modules/*/extra/*.ko*")[0][1].name == "b.ko.xz"
    assert rootfs.glob(root, "/nothing/*.ko") == []


def test_sign_patterns_try_raw_and_normalized_kernels() -> None:
    assert image.sign_patterns(["/opt/lib/modules/${KERNEL_FULL_VERSION}/*.ko"],
                               "5.14.0-427.18.1.el9_4.x86_64+rt") == [[
        "/opt/lib/modules/5.14.0-427.18.1.el9_4.x86_64_rt/*.ko",
        "/opt/lib/modules/5.14.0-427.18.1.el9_4.x86_64+rt/*.ko"]]
    assert image.sign_patterns(["/opt/lib/modules/$KERNEL_VERSION/x.ko"], "6.1.0-56-amd64") == \
        [["/opt/lib/modules/6.1.0-56-amd64/x.ko"]]


def test_match_files_finds_rt_modules_under_the_raw_name(tmp_path: Path) -> None:
    release = "6.12.117+deb12-rt-amd64"  # normalizes to 6.12.117_deb12-rt-amd64
    mods = tmp_path / "opt/lib/modules" / release
    mods.mkdir(parents=True)
    (mods / "m.ko").write_bytes(b"m")
    hits = image.match_files(tmp_path, ["/opt/lib/modules/${KERNEL_FULL_VERSION}/*.ko"], release)
    assert [i for i, _ in hits] == [f"/opt/lib/modules/{release}/m.ko"]
    with pytest.raises(DtkError, match="matches no file"):
        image.match_files(tmp_path, ["/opt/lib/modules/${KERNEL_FULL_VERSION}/*.ko",
                                     "/opt/other/*.ko"], release)


def test_glob_patterns_cannot_climb_out(root: Path) -> None:
    with pytest.raises(rootfs.UnsafePathError):
        rootfs.glob(root, "/opt/../../secret")
    with pytest.raises(rootfs.UnsafePathError):
        image.match_files(root, ["/opt/lib/../../../../*"], "6.1.0-56-amd64")


def test_copy_tree_copies_links_as_links_and_never_follows_them(root: Path,
                                                                 tmp_path: Path) -> None:
    mods = root / "opt/lib/modules/6.1.0-56-amd64"
    (mods / "leak").symlink_to(tmp_path)  # a host directory, by its host path
    (mods / "leak.ko").symlink_to(tmp_path / "secret")
    os.mkfifo(mods / "fifo")
    (mods / "a.ko").chmod(0o4755)
    rootwrite.copy_tree(root / "opt", tmp_path / "copy")
    copied = tmp_path / "copy/lib/modules/6.1.0-56-amd64"
    assert (copied / "leak").readlink() == tmp_path
    assert (copied / "leak.ko").readlink() == tmp_path / "secret"
    assert (copied / "host").readlink() == Path("/host/lib/modules/6.1.0-56-amd64")
    assert (copied / "extra/b.ko.xz").read_bytes() == b"b"
    assert not (copied / "fifo").exists()
    assert (copied / "a.ko").stat().st_mode & 0o7777 == 0o755  # no set-id bits


def test_copy_tree_refuses_a_tree_that_is_a_link(root: Path, tmp_path: Path) -> None:
    (root / "swapped").symlink_to(tmp_path)
    with pytest.raises(rootfs.UnsafePathError, match="/swapped is a link"):
        rootwrite.copy_tree(root / "swapped", tmp_path / "copy")


def test_read_regular_reads_no_link(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("host file")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/status").write_text("0\n")
    (tmp_path / "out/records").symlink_to(tmp_path / "secret")
    assert rootfs.read_regular(tmp_path / "out", "status") == b"0\n"
    assert rootfs.read_regular(tmp_path / "out", "records") is None
    assert rootfs.read_regular(tmp_path / "out", "missing") is None
