"""Content hashes: the one way dtk names an input by its content.

Cache keys (kernel facts, VM caches), plan ids (toolkits, driver cells) and
image labels all come from here, so that "the same inputs" means one thing
everywhere: what makes a rebuild with unchanged inputs a cache hit.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path

_CHUNK = 1 << 20


def parts_digest(*parts: str | bytes, length: int = 64) -> str:
    """sha256 hex over `parts`, each ended by NUL so that ("ab", "c") != ("a", "bc")."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:length]


def keyed_digest(key: bytes, *parts: str | bytes) -> str:
    """HMAC-SHA256 over `parts`: for secrets, whose plain digest a guess could confirm
    (a short token's sha256 is a dictionary away); `key` never leaves the host."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part.encode() if isinstance(part, str) else part)
        mac.update(b"\0")
    return "hmac-sha256:" + mac.hexdigest()


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(root: Path) -> str:
    """sha256 over every entry's relative path, kind, executable bit and content.

    Timestamps and owners are left out on purpose: a fresh checkout or a
    re-extracted package must hash the same as the tree that was built before.
    """
    h = hashlib.sha256()
    if root.is_file():
        h.update(b"file\0" + file_digest(root).encode())
        return "sha256:" + h.hexdigest()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(filenames + [d for d in dirnames if (base / d).is_symlink()]):
            path = base / name
            rel = path.relative_to(root).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                entry = f"link\0{rel}\0{path.readlink()}"
            elif stat.S_ISREG(info.st_mode):
                exe = "x" if info.st_mode & 0o111 else "-"
                entry = f"file\0{rel}\0{exe}\0{file_digest(path)}"
            else:
                continue  # sockets, fifos: not build inputs
            h.update(entry.encode() + b"\n")
    return "sha256:" + h.hexdigest()


def inputs_digest(inputs: Mapping[str, object]) -> str:
    """sha256 of a JSON rendering with sorted keys: the same inputs give the same id."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
