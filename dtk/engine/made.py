"""The images dtk made, as its own records say: what `prune` may remove.

An image's labels prove nothing about who made it: `FROM` copies them into every
image built on one of dtk's, tagged or not (a `--layers` cache), so a prune that
went by labels would take images users built on a toolkit. dtk writes a record
(image id, name, kind) in its state directory when it tags an image, and prunes
only images whose id has one; an image built on dtk's has another id.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from dtk import paths
from dtk.files import write_atomic


@dataclass(frozen=True)
class Made:
    image_id: str  # the full id, without "sha256:"
    name: str
    kind: str  # "toolkit", "toolkit-base", "toolkit-tools", "toolkit-extras", "driver"


def _dir() -> Path:
    return paths.state_dir() / "images"


def _id(image_id: str) -> str:
    return image_id.removeprefix("sha256:")


def record(image_id: str, name: str, kind: str) -> None:
    """Note that dtk made `image_id` (tagged `name`) as a `kind` image."""
    made = {"image_id": _id(image_id), "name": name, "kind": kind}
    write_atomic(_dir() / f"{_id(image_id)}.json", json.dumps(made).encode())


def records() -> dict[str, Made]:
    """Every image dtk recorded making, by full id."""
    found = {}
    for path in sorted(_dir().glob("*.json")) if _dir().is_dir() else ():
        try:
            data = json.loads(path.read_text())
            made = Made(str(data["image_id"]), str(data["name"]), str(data["kind"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a record dtk wrote: it proves nothing
        if made.image_id == path.stem:
            found[made.image_id] = made
    return found


def forget(image_id: str) -> None:
    (_dir() / f"{_id(image_id)}.json").unlink(missing_ok=True)


def forget_missing(present: set[str], listed_at: float) -> None:
    """Drop the records of images not in storage when it was listed (at `listed_at`,
    time.time()): removed by hand, or pruned. A record written since may be of an
    image committed after the listing: it stays."""
    for image_id in set(records()) - {_id(i) for i in present}:
        path = _dir() / f"{image_id}.json"
        with contextlib.suppress(OSError):
            if path.stat().st_mtime < listed_at:
                path.unlink()
