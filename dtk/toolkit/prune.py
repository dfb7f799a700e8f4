"""What `dtk toolkit prune` removes: only images the toolkit builder made.

A toolkit whose kernel left the archive; a base or tools layer that a newer
one (new package versions) superseded; and an untagged toolkit image (left by a
rebuild). Only images dtk's own records say it made count (`dtk.engine.made`):
labels are copied into every image built `FROM` a toolkit, so images users
build on one (tagged, or `--layers` caches) carry them too. Never anything else
in the user's storage: `buildah rmi --prune` would also take their own build
caches. Removing a superseded base or tools image only drops its tag while a
toolkit still stands on it: buildah keeps layers that images use.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dtk.engine import buildah, made
from dtk.errors import DtkError
from dtk.toolkit import plan as tplan

_SHARED = {"toolkit-base": tplan.TOOLKIT_BASE_REPO, "toolkit-tools": tplan.TOOLS_REPO}


@dataclass(frozen=True)
class Removal:
    image_id: str
    names: tuple[str, ...]
    why: str
    size: int  # exact bytes of the image's layers (they may be shared)

    def to_json(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "names": list(self.names), "why": self.why,
                "size": self.size}


def plan_prune(available: set[str], current: set[str]) -> list[Removal]:
    """`available`: kernels the archive has; `current`: the base and tools tags a plan
    makes today (they stay)."""
    if not available:
        raise DtkError("the package archive lists no kernel at all: every toolkit would look "
                       "stale, so nothing is pruned",
                       hint="check the APT sources (or the file given to --sources) and the "
                            "network, then prune again")
    listed_at = time.time()
    rows = buildah.images()
    made.forget_missing({row["id"] for row in rows}, listed_at)
    ours = made.records()
    removals = []
    for row in rows:
        record = ours.get(row["id"])
        if record is None or not record.kind.startswith("toolkit"):
            continue  # not an image dtk recorded making, whatever its labels say
        try:
            labels = buildah.labels(row["id"])
        except DtkError:
            continue  # removed by another run while we looked: nothing to do
        why = _why(record.kind, labels, tuple(row.get("names") or ()), available, current)
        if why:
            removals.append(Removal(row["id"], tuple(row.get("names") or ()), why,
                                    buildah.image_size(row["id"])))
    return removals


def _why(kind: str, labels: dict[str, str], names: tuple[str, ...], available: set[str],
         current: set[str]) -> str:
    if kind == "toolkit-extras":
        return ""  # `dtk build prune` owns them
    if not names:
        return f"untagged {kind} image (left by a rebuild)"
    if kind == "toolkit":
        kernel = labels.get("kernel-version", "")
        return "" if kernel in available else f"toolkit for {kernel}, which left the archive"
    if kind in _SHARED and not any(n in current for n in names):
        return f"{kind.removeprefix('toolkit-')} layer superseded by newer package versions"
    return ""


def prune(removals: list[Removal]) -> None:
    for removal in removals:
        for name in removal.names or (removal.image_id,):
            buildah.remove_image(name)
        if not buildah.image_exists(removal.image_id):
            made.forget(removal.image_id)
