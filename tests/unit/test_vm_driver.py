"""Reading a driver image's tree: KMM's layout, and no way out of the image root."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from dtk.errors import DtkError
from dtk.vm.driver import _read_root, read_driver_tree
from tests.unit.test_kernel_modfile import module_elf

K = "6.1.0-56-amd64"


def image_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    extra = root / "opt/lib/modules" / K / "extra"
    extra.mkdir(parents=True)
    (extra / "v4l2loopback.ko").write_bytes(module_elf(b"depends=videodev\0"))
    (root / "opt/lib/modules" / K / "modules.dep").write_text("extra/v4l2loopback.ko:\n")
    return root


def test_tree_modules_and_in_tree_needs(tmp_path: Path) -> None:
    contents = _read_root(image_root(tmp_path), (K, "6.12.117+deb12-amd64"), "/opt", "")
    tree = contents.trees[K]
    assert tree.modules == {"v4l2loopback": f"/opt/lib/modules/{K}/extra/v4l2loopback.ko"}
    assert tree.in_tree_needs == ["videodev"]
    assert contents.missing == {"6.12.117+deb12-amd64":
                                "the image has no /opt/lib/modules/6.12.117+deb12-amd64 "
                                f"(it has modules for: {K})"}


def test_symlinks_stay_links_and_are_never_followed_on_the_host(tmp_path: Path) -> None:
    root = image_root(tmp_path)
    secret = tmp_path / "host-secret"
    secret.write_text("host data")
    (root / "opt/lib/modules" / K / "extra/escape.ko").symlink_to(secret)
    (root / "opt/lib/modules" / K / "host").symlink_to(f"/host/lib/modules/{K}")
    tree = _read_root(root, (K,), "/opt", "").trees[K]
    links = {e.path: e.data for e in tree.entries if stat.S_ISLNK(e.mode)}
    assert links[f"/opt/lib/modules/{K}/extra/escape.ko"] == str(secret).encode()
    assert links[f"/opt/lib/modules/{K}/host"] == f"/host/lib/modules/{K}".encode()
    assert all(b"host data" not in e.data for e in tree.entries)
    assert "escape" not in tree.modules


def test_a_symlinked_dir_name_is_not_entered(tmp_path: Path) -> None:
    real = image_root(tmp_path)
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "opt").symlink_to(real / "opt")
    contents = _read_root(evil, (K,), "/opt", "")
    assert not contents.trees
    assert "no /opt/lib/modules" in contents.missing[K]


def test_firmware_lands_where_kmm_copies_it(tmp_path: Path) -> None:
    root = image_root(tmp_path)
    (root / "firmware/vendor").mkdir(parents=True)
    (root / "firmware/vendor/fw.bin").write_bytes(b"\x01\x02")
    contents = _read_root(root, (K,), "/opt", "/firmware")
    assert "/tmp/firmware/vendor/fw.bin" in [e.path for e in contents.firmware]
    with pytest.raises(DtkError, match="no firmware at /lib/firmware"):
        _read_root(root, (K,), "/opt", "/lib/firmware")


def test_a_directory_without_modules(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "opt/lib/modules" / K).mkdir(parents=True)
    contents = _read_root(root, (K,), "/opt", "")
    assert contents.missing[K] == f"the image has no kernel module under /opt/lib/modules/{K}"


def test_an_image_name_the_shell_emptied() -> None:
    with pytest.raises(DtkError, match="single quotes"):
        read_driver_tree("localhost/dtk-driver/m:", (K,), "/opt")
