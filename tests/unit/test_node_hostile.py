"""A hostile driver image on a node: each reproduction of the node review (issue 24)
runs against a scratch "host" root holding sentinel files around dtk's state, and
the host must come out byte for byte as it went in.

The layers are real tar streams and OCI layouts written here (no builder writes
hostile layers); the unpacker, the firmware copy and the link checks are dtk's own.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from dtk.errors import DtkError
from dtk.node import oci
from dtk.node.load import Step, execute
from tests.unit.node_support import oci_layout

PREFIXES = ("opt/lib/modules", "firmware")
K = "6.1.0-57-amd64"
MODS = f"opt/lib/modules/{K}"


def entry(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "",
          data: bytes = b"", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.size = kind, linkname, mode, len(data)
    return info, data


def layer(*entries: tuple[tarfile.TarInfo, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue()


def snapshot(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every entry under `root` by kind and content (links by their text)."""
    seen: dict[str, tuple[str, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = ("link", str(path.readlink()).encode())
            elif path.is_dir():
                seen[rel] = ("dir", b"")
            else:
                seen[rel] = ("file", path.read_bytes())
    return seen


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A scratch host: sentinels in /etc and /var, another declaration's prepared tree."""
    root = tmp_path / "host"
    (root / "etc/cron.d").mkdir(parents=True)
    (root / "etc/shadow").write_text("root:secret\n")
    (root / "etc/cron.d/daily").write_text("@daily true\n")
    (root / "var/sentinel").mkdir(parents=True)
    (root / "var/sentinel/precious").write_text("keep me\n")
    other = root / "var/lib/dtk/trees/sha256-other/opt/lib/modules" / K
    other.mkdir(parents=True)
    (other / "other.ko").write_bytes(b"another declaration's module")
    return root


def unpack(host: Path, *layers: bytes) -> Path:
    layout = host / "var/lib/dtk/oci"
    digest = oci_layout(layout, list(layers))
    return oci.unpack(layout, digest, host / "var/lib/dtk/trees", PREFIXES)


def refused_and_untouched(host: Path, *layers: bytes) -> None:
    before = snapshot(host)
    # What the unpacker wrote itself (the layout's blobs) is not the host's.
    with pytest.raises(DtkError):
        unpack(host, *layers)
    after = snapshot(host)
    for name in list(after):
        if name.startswith("var/lib/dtk/oci"):
            del after[name]
    assert after == before


# From the work directory .unpack-*: "a" is the tree's root, "b" climbs four levels
# from it (trees, dtk, lib, var): lexically both stay inside, together they leave.
CHAIN = (entry(f"{MODS}/a", tarfile.SYMTYPE, "../../../.."),
         entry(f"{MODS}/b", tarfile.SYMTYPE, "a/../../../.."))


def test_a_whiteout_named_dot_dot_removes_nothing(host: Path) -> None:
    """`.wh...` whited out the tree's parent: every other declaration's tree."""
    refused_and_untouched(host, layer(entry(f"{MODS}/x.ko", data=b"ko"),
                                      entry(".wh..")))


def test_a_whiteout_under_a_link_chain_deletes_no_host_file(host: Path) -> None:
    refused_and_untouched(host, layer(*CHAIN),
                          layer(entry(f"{MODS}/b/sentinel/.wh.precious")))


def test_an_opaque_whiteout_under_a_link_chain_empties_no_host_directory(host: Path) -> None:
    refused_and_untouched(host, layer(*CHAIN),
                          layer(entry(f"{MODS}/b/sentinel/.wh..wh..opq")))


def test_a_chain_of_links_leading_out_is_refused(host: Path) -> None:
    """Each link lexically inside, together above the tree: what modprobe -d would
    follow out of the tree (and verify would not see)."""
    refused_and_untouched(host, layer(entry(f"{MODS}/x.ko", data=b"ko"), *CHAIN))
    assert not any(p.name.startswith(".unpack") for p in (host / "var/lib/dtk/trees").iterdir())


def test_a_hard_link_through_a_link_chain_links_no_host_file(host: Path) -> None:
    refused_and_untouched(host, layer(*CHAIN, entry(f"{MODS}/c.ko", tarfile.LNKTYPE,
                                                    f"{MODS}/b/sentinel/precious")))
    assert (host / "var/sentinel/precious").stat().st_nlink == 1


def test_links_that_stay_inside_are_kept_as_links(host: Path) -> None:
    tree = unpack(host, layer(entry(f"{MODS}/real.ko", data=b"ko"),
                              entry(f"{MODS}/sub", tarfile.DIRTYPE, mode=0o755),
                              entry(f"{MODS}/sub/rel.ko", tarfile.SYMTYPE, "../real.ko"),
                              entry(f"{MODS}/abs.ko", tarfile.SYMTYPE, f"/{MODS}/real.ko")))
    assert (tree / MODS / "sub/rel.ko").read_bytes() == b"ko"
    assert (tree / MODS / "abs.ko").read_bytes() == b"ko"  # re-rooted into the tree
    assert (tree / MODS / "abs.ko").is_symlink()


def firmware_step(source: Path, dest: Path) -> Step:
    return Step("firmware", path=str(dest), source=str(source))


def test_firmware_links_planted_by_one_image_are_not_written_through_by_another(
        host: Path, tmp_path: Path) -> None:
    """Image A's firmware holds a link that resolves inside A's firmware directory but,
    copied one level deeper under /var/lib/firmware, points at /var; image B then ships
    a directory of that name. Nothing may land outside /var/lib/firmware."""
    dest = host / "var/lib/firmware"
    a = tmp_path / "a/firmware"
    (a / "vendor").mkdir(parents=True)
    (a / "vendor/dev.bin").write_bytes(b"A")
    (a / "vendor/up").symlink_to("../../..")  # climbs out once copied
    (a / "vendor/cur").symlink_to("dev.bin")  # stays inside: kept
    b = tmp_path / "b/firmware"
    (b / "vendor/up/sentinel").mkdir(parents=True)
    (b / "vendor/up/sentinel/precious").write_text("overwritten\n")
    before = {k: v for k, v in snapshot(host).items() if not k.startswith("var/lib/firmware")}
    execute([firmware_step(a, dest)])
    execute([firmware_step(b, dest)])
    after = {k: v for k, v in snapshot(host).items() if not k.startswith("var/lib/firmware")}
    assert after == before
    assert (dest / "vendor/cur").read_bytes() == b"A"
    assert (dest / "vendor/up/sentinel/precious").read_text() == "overwritten\n"


def test_firmware_with_links_copies_again_on_the_next_boot(tmp_path: Path) -> None:
    """The second boot's copy raised shutil.Error (FileExistsError on every link)."""
    src = tmp_path / "firmware"
    (src / "v").mkdir(parents=True)
    (src / "v/fw-1.bin").write_bytes(b"1")
    (src / "v/fw.bin").symlink_to("fw-1.bin")
    dest = tmp_path / "host/var/lib/firmware"
    execute([firmware_step(src, dest)])
    (src / "v/fw-1.bin").write_bytes(b"2")
    execute([firmware_step(src, dest)])
    assert (dest / "v/fw.bin").read_bytes() == b"2"
    assert (dest / "v/fw.bin").is_symlink()
