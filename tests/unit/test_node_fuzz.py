"""Hypothesis-generated hostile layers against the node's layer applier, and the two
ways dtk resolves a path beneath a root (the kernel's openat2, dtk's own walk) held
against each other.

Each example unpacks generated layers (files, directories, relative and absolute
links, chains of links, hard links, whiteouts, opaque whiteouts, odd names) into
a tree inside a scratch "host" root that holds sentinel files and directories
around dtk's state: no sentinel may change, be deleted, or be read into the tree,
and a refusal is a DtkError, never another exception.
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtk import rootfs, rootwrite
from dtk.errors import DtkError
from dtk.node import oci
from tests.unit.node_support import oci_layout

PREFIXES = ("opt/lib/modules", "firmware")
NAMES = ["opt", "lib", "modules", "K", "a", "b", "c", "host", "firmware", "x.ko", "etc",
         "var", ".wh.a", ".wh.b", ".wh..wh..opq", ".wh..", ".wh.", "..", ".", ""]
# Entry names are hostile rarely (such a layer is refused at once, and teaches little);
# link targets climb often (chains are the point).
HOSTILE = ("..", ".wh..", ".wh.")
ENTRY_NAMES = [n for n in NAMES if n not in HOSTILE] * 12 + list(HOSTILE)
STEMS = [("opt", "lib", "modules", "K"), ("firmware",), ("opt", "lib", "modules"), ()]

components = st.lists(st.sampled_from(ENTRY_NAMES), min_size=1, max_size=4)
paths = st.builds(lambda stem, rest: "/".join((*stem, *rest)), st.sampled_from(STEMS),
                  components)
targets = st.one_of(
    st.builds("/".join, st.lists(st.sampled_from(NAMES), max_size=7)),
    st.builds(lambda parts: "/" + "/".join(parts), st.lists(st.sampled_from(NAMES),
                                                            max_size=6)),
    paths)
kinds = st.sampled_from(["file"] * 6 + ["dir"] * 6 + ["link"] * 8 + ["hard"] * 3
                        + ["device", "setuid"])
entries = st.tuples(kinds, paths, targets)
layers = st.lists(st.lists(entries, min_size=1, max_size=10), min_size=1, max_size=3)


def tar_layer(items: list[tuple[str, str, str]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for kind, name, target in items:
            info = tarfile.TarInfo(name)
            data = b""
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, target
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, target.lstrip("/")
            elif kind == "device":
                info.type = tarfile.CHRTYPE
            else:
                data = name.encode()
                info.size, info.mode = len(data), 0o4755 if kind == "setuid" else 0o644
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return out.getvalue()


def make_host(root: Path) -> dict[Path, bytes]:
    """Sentinels around dtk's state, each with content found nowhere else."""
    sentinels = {}
    for rel in ("etc/shadow", "etc/cron.d/job", "var/sentinel/precious", "var/lib/secret",
                "var/lib/dtk/trees/sha256-other/opt/lib/modules/K/other.ko", "lib/x.ko"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(secrets.token_bytes(24))
        sentinels[path] = path.read_bytes()
    return sentinels


def tree_files(tree: Path) -> list[Path]:
    return [Path(d) / f for d, _dirs, files in os.walk(tree) for f in files
            if not (Path(d) / f).is_symlink()]


_STATS = {"examples": 0, "refused": 0, "seconds": 0.0}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layers)
def test_generated_layers_never_touch_the_host(generated: list[list[tuple[str, str, str]]]
                                                ) -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dtk-fuzz-") as tmp:
        host = Path(tmp)
        sentinels = make_host(host)
        inodes = {p.stat().st_ino for p in sentinels}
        layout = host / "var/lib/dtk/oci"
        digest = oci_layout(layout, [tar_layer(items) for items in generated])
        try:
            tree = oci.unpack(layout, digest, host / "var/lib/dtk/trees", PREFIXES)
        except DtkError:
            _STATS["refused"] += 1
            tree = None
        for path, data in sentinels.items():
            assert path.is_file() and not path.is_symlink(), path
            assert path.read_bytes() == data, path
        assert not list((host / "var/lib/dtk/trees").glob(".unpack-*"))
        if tree is not None:
            values = set(sentinels.values())
            for found in tree_files(tree):
                assert found.stat().st_ino not in inodes, found
                assert found.read_bytes() not in values, found
            fd = rootfs.open_root(tree)
            try:
                assert rootwrite.links_leaving(fd) == []
            finally:
                os.close(fd)
    _STATS["examples"] += 1
    _STATS["seconds"] += time.perf_counter() - start


def test_fuzz_report() -> None:
    """Runs after the fuzz pass (file order): how much it tried, for the closing note."""
    if _STATS["examples"]:
        print(f"\nlayer fuzz: {_STATS['examples']} examples, {_STATS['refused']} refused, "
              f"{_STATS['seconds']:.1f} s")


# --- openat2 and the walk agree ------------------------------------------------------------

tree_entries = st.lists(st.tuples(st.sampled_from(["dir", "file", "link"]),
                                  st.lists(st.sampled_from(["a", "b", "c"]), min_size=1,
                                           max_size=3),
                                  targets), max_size=12)
queries = st.lists(st.lists(st.sampled_from(["a", "b", "c", "..", ".", "x"]), max_size=5),
                   min_size=1, max_size=6)


def build(root: Path, items: list[tuple[str, list[str], str]]) -> None:
    for kind, parts, target in items:
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir":
                path.mkdir(exist_ok=True)
            elif kind == "file":
                path.write_bytes(b"f")
            else:
                path.symlink_to(target or ".")
        except OSError:
            continue  # a parent is a file or a link: that entry just is not made


def answer(rootfd: int, inner: str, mode: rootfs.Mode) -> object:
    try:
        found = rootfs.open_at(rootfd, inner, mode)
    except rootfs.UnsafePathError:
        return "refused"
    if found is None:
        return None
    found.close()
    return found.parts


@settings(max_examples=300, deadline=None)
@given(tree_entries, queries, st.sampled_from([rootfs.Mode.BENEATH, rootfs.Mode.NOFOLLOW]))
def test_openat2_and_the_walk_resolve_alike(items: list[tuple[str, list[str], str]],
                                             asked: list[list[str]], mode: rootfs.Mode) -> None:
    with tempfile.TemporaryDirectory(prefix="dtk-resolve-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        build(root, items)
        fd = rootfs.open_root(root)
        try:
            for parts in asked:
                inner = "/".join(parts)
                by_kernel = answer(fd, inner, mode)
                assert rootfs._openat2_usable
                rootfs._openat2_usable = False
                try:
                    by_walk = answer(fd, inner, mode)
                finally:
                    rootfs._openat2_usable = True
                assert by_kernel == by_walk, (inner, by_kernel, by_walk)
        finally:
            os.close(fd)


@pytest.fixture(autouse=True)
def _openat2_restored() -> object:
    yield
    rootfs._openat2_usable = True
