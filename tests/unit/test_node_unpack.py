"""Layers unpacked onto a host: only the driver's parts, nothing that escapes or
plants a device or a setuid file. The layers are real tar streams built here."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from dtk import rootfs
from dtk.errors import DtkError
from dtk.node import oci
from dtk.node.unpack import UnsafeLayerError, apply_layer
from tests.unit.node_support import oci_layout

PREFIXES = ("opt/lib/modules", "firmware")


def layer(*entries: tarfile.TarInfo | tuple[str, bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(entry[1]))
    out.seek(0)
    return out


def info(name: str, kind: bytes, linkname: str = "", mode: int = 0o644) -> tarfile.TarInfo:
    entry = tarfile.TarInfo(name)
    entry.type, entry.linkname, entry.mode = kind, linkname, mode
    return entry


def apply(tree: Path, stream: io.BytesIO) -> None:
    fd = rootfs.open_root(tree)
    try:
        apply_layer(fd, stream, PREFIXES, "layer 1")
    finally:
        os.close(fd)


def test_only_the_driver_parts_are_written(tmp_path: Path) -> None:
    apply(tmp_path, layer(("etc/passwd", b"root::0:0"), ("opt/lib/modules/K/a.ko", b"ko"),
                          ("firmware/a.bin", b"fw"), ("usr/bin/su", b"x")))
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["firmware/a.bin", "opt/lib/modules/K/a.ko"]


@pytest.mark.parametrize("entry", [
    ("../../etc/cron.d/x", tarfile.REGTYPE, ""),
    ("/etc/cron.d/x", tarfile.REGTYPE, ""),
    ("opt/lib/modules/K/../../../../../x", tarfile.REGTYPE, ""),
    ("opt/lib/modules/K/host", tarfile.SYMTYPE, "/../etc"),
])
def test_entries_that_climb_out_are_refused(tmp_path: Path,
                                            entry: tuple[str, bytes, str]) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    with pytest.raises(UnsafeLayerError, match=r"climbs out|absolute path|outside the image"):
        apply(tree, layer(info(*entry)))
    assert not (tmp_path / "etc").exists() and not (tmp_path / "x").exists()


def test_a_relative_link_out_of_the_image_is_refused_once_applied(tmp_path: Path) -> None:
    digest = oci_layout(tmp_path / "layout", [layer(info("opt/lib/modules/K/host",
                                                         tarfile.SYMTYPE,
                                                         "../../../../../../etc")).getvalue()])
    with pytest.raises(UnsafeLayerError, match="lead out of it"):
        oci.unpack(tmp_path / "layout", digest, tmp_path / "trees", PREFIXES)


def test_writing_through_a_link_is_refused(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    with pytest.raises(UnsafeLayerError, match="would be written through"):
        apply(tree, layer(info("opt/lib/modules/K", tarfile.SYMTYPE, "/etc"),
                          ("opt/lib/modules/K/evil.conf", b"x")))


@pytest.mark.parametrize(("entry", "said"), [
    (info("opt/lib/modules/K/tool", tarfile.REGTYPE, mode=0o4755), "setuid"),
    (info("firmware/sda", tarfile.BLKTYPE), "device node"),
    (info("firmware/mem", tarfile.CHRTYPE), "device node"),
])
def test_setuid_files_and_devices_are_refused(tmp_path: Path, entry: tarfile.TarInfo,
                                              said: str) -> None:
    with pytest.raises(UnsafeLayerError, match=said):
        apply(tmp_path, layer(entry))


def test_absolute_links_are_rerooted_into_the_tree(tmp_path: Path) -> None:
    """KMM images link …/host to /host/lib/modules/K: inside the image, not the host."""
    apply(tmp_path, layer(info("opt/lib/modules/K/host", tarfile.SYMTYPE,
                               "/host/lib/modules/K")))
    link = tmp_path / "opt/lib/modules/K/host"
    assert str(link.readlink()) == "../../../../host/lib/modules/K"
    assert link.resolve() == (tmp_path / "host/lib/modules/K").resolve()


def test_whiteouts_remove_what_lower_layers_wrote(tmp_path: Path) -> None:
    apply(tmp_path, layer(("opt/lib/modules/K/old.ko", b"1"), ("opt/lib/modules/K/keep.ko", b"2"),
                          ("firmware/a/x.bin", b"3")))
    apply(tmp_path, layer(info("opt/lib/modules/K/.wh.old.ko", tarfile.REGTYPE),
                          info("firmware/a/.wh..wh..opq", tarfile.REGTYPE)))
    assert sorted(p.name for p in (tmp_path / "opt/lib/modules/K").iterdir()) == ["keep.ko"]
    assert list((tmp_path / "firmware/a").iterdir()) == []


def test_hard_links_inside_the_tree(tmp_path: Path) -> None:
    apply(tmp_path, layer(("opt/lib/modules/K/a.ko", b"ko"),
                          info("opt/lib/modules/K/b.ko", tarfile.LNKTYPE,
                               "opt/lib/modules/K/a.ko")))
    assert (tmp_path / "opt/lib/modules/K/b.ko").read_bytes() == b"ko"
    with pytest.raises(UnsafeLayerError, match="names no file"):
        apply(tmp_path, layer(info("opt/lib/modules/K/c.ko", tarfile.LNKTYPE, "etc/shadow")))


def test_modes_are_plain(tmp_path: Path) -> None:
    apply(tmp_path, layer(info("opt/lib/modules", tarfile.DIRTYPE, mode=0o777)))
    assert stat.S_IMODE((tmp_path / "opt/lib/modules").stat().st_mode) == 0o755


def test_a_corrupt_layer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DtkError, match="not a readable tar layer"):
        apply(tmp_path, io.BytesIO(b"\x00garbage" * 100))


def test_a_blob_must_hash_to_its_digest(tmp_path: Path) -> None:
    data = b"layer bytes"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blob = oci.blob_path(tmp_path, digest)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    assert oci.verify_blob(tmp_path, digest) == blob
    blob.write_bytes(data + b"!")
    with pytest.raises(DtkError, match="does not match its digest"):
        oci.verify_blob(tmp_path, digest)
    with pytest.raises(DtkError, match="malformed digest"):
        oci.blob_path(tmp_path, "sha256:../../etc")


def test_an_image_unpacks_once_into_its_own_tree(tmp_path: Path) -> None:
    first = gzip.compress(layer(("opt/lib/modules/K/a.ko", b"1")).getvalue())
    second = layer(info("opt/lib/modules/K/.wh.a.ko", tarfile.REGTYPE),
                   ("opt/lib/modules/K/b.ko", b"2")).getvalue()
    digest = oci_layout(tmp_path / "layout", [first, second])
    assert oci.manifest_digest(tmp_path / "layout", "t") == digest
    tree = oci.unpack(tmp_path / "layout", digest, tmp_path / "trees", PREFIXES)
    assert sorted(p.name for p in (tree / "opt/lib/modules/K").iterdir()) == ["b.ko"]
    assert oci.unpack(tmp_path / "layout", digest, tmp_path / "trees", PREFIXES) == tree
    other = oci.unpack(tmp_path / "layout", digest, tmp_path / "trees", ("opt/lib/modules",))
    assert other != tree  # another part of the image is another tree


def test_a_hostile_layer_leaves_no_tree_behind(tmp_path: Path) -> None:
    digest = oci_layout(tmp_path / "layout", [layer(("opt/lib/modules/K/a.ko", b"1"),
                                                    ("../../escape", b"x")).getvalue()])
    with pytest.raises(UnsafeLayerError, match="climbs out"):
        oci.unpack(tmp_path / "layout", digest, tmp_path / "trees", PREFIXES)
    assert list((tmp_path / "trees").iterdir()) == []
    assert not (tmp_path / "escape").exists()
