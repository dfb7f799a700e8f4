"""The newc writer, read back by a small parser and by the real cpio tool."""

from __future__ import annotations

import io
import stat
import subprocess

import pytest

from dtk.vm import cpio


def parse(data: bytes) -> list[tuple[str, int, bytes, tuple[int, int]]]:
    """(name, mode, data, rdev) of each entry up to the trailer."""
    out: list[tuple[str, int, bytes, tuple[int, int]]] = []
    pos = 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body = name_start + namesize + (-(110 + namesize) % 4)
        if name == "TRAILER!!!":
            return out
        out.append((name, fields[1], data[body:body + filesize], (fields[9], fields[10])))
        pos = body + filesize + (-filesize % 4)


def archive(entries: list[cpio.Entry]) -> bytes:
    buf = io.BytesIO()
    cpio.write(buf, entries)
    return buf.getvalue()


def test_parents_come_first_once_and_entries_keep_their_order() -> None:
    data = archive([cpio.file("/opt/lib/modules/K/extra/a.ko", b"abc"),
                    cpio.file("/opt/lib/modules/K/modules.dep", b"extra/a.ko:\n"),
                    cpio.symlink("/sbin/modprobe", "/bin/kmod"),
                    cpio.chardev("/dev/console", 5, 1)])
    names = [name for name, *_ in parse(data)]
    assert names == ["opt", "opt/lib", "opt/lib/modules", "opt/lib/modules/K",
                     "opt/lib/modules/K/extra", "opt/lib/modules/K/extra/a.ko",
                     "opt/lib/modules/K/modules.dep", "sbin", "sbin/modprobe", "dev",
                     "dev/console"]
    entries = {name: (mode, body, rdev) for name, mode, body, rdev in parse(data)}
    assert entries["opt/lib/modules/K/extra/a.ko"][1] == b"abc"
    assert stat.S_ISLNK(entries["sbin/modprobe"][0])
    assert entries["sbin/modprobe"][1] == b"/bin/kmod"
    assert stat.S_ISCHR(entries["dev/console"][0]) and entries["dev/console"][2] == (5, 1)
    assert stat.S_ISDIR(entries["opt"][0])


def test_deterministic() -> None:
    entries = [cpio.file("/init", b"#!/bin/sh\n", 0o755), cpio.file("/x/y", b"z" * 5)]
    assert archive(entries) == archive(entries)


def test_relative_paths_are_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        archive([cpio.file("etc/passwd", b"")])


def test_the_cpio_tool_reads_it(tmp_path: object) -> None:
    data = archive([cpio.file("/a/b.txt", b"hello\n"), cpio.symlink("/a/c", "b.txt")])
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=data, capture_output=True,
                             check=True).stdout.decode().split()
    assert listing == ["a", "a/b.txt", "a/c"]
