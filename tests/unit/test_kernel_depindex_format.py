"""kmod's binary index, read in Python: the file kmod's `modprobe -d` really reads."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from dtk.kernel.depindex import MAGIC, DepIndexError, dep_entries, read_index

# Written by kmod's depmod (-b DIR 6.1.0-56-amd64) over extra/crc7.ko,
# extra/crc-itu.ko and updates/dkms/my-mod.ko.
DEP_BIN = Path(__file__).parent.parent / "data/kmod/modules.dep.bin"


def test_reads_what_depmod_wrote() -> None:
    assert dep_entries(DEP_BIN.read_bytes()) == {
        "crc7": "extra/crc7.ko", "crc_itu": "extra/crc-itu.ko",
        "my_mod": "updates/dkms/my-mod.ko"}


def test_rejects_other_files() -> None:
    with pytest.raises(DepIndexError, match="not a kmod index"):
        read_index(b"crc7: extra/crc7.ko\n")  # the text modules.dep busybox writes
    with pytest.raises(DepIndexError, match="truncated or corrupt"):
        read_index(DEP_BIN.read_bytes()[:20])
    looping = struct.pack(">III", MAGIC, 0x00020001, 0x20000000 | 12) + bytes([97, 97]) + \
        struct.pack(">I", 0x20000000 | 12)
    with pytest.raises(DepIndexError, match="links a node twice"):
        read_index(looping)
