"""What `dtk toolkit prune` removes: only images the toolkit builder made.

A toolkit whose kernel left the archive; a base or tools layer that a newer
one (new package versions) superseded; and any untagged image that carries a
toolkit label (left by a rebuild). Never anything else in the user's storage:
`buildah rmi --prune` would also take their own build caches. Removing a
superseded base or tools image only drops its tag while a toolkit still
stands on it: buildah keeps layers that images use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dtk.engine import buildah
from dtk.errors import DtkError
from dtk.toolkit import plan as tplan

_SHARED = {"toolkit-base": tplan.TOOLKIT_BASE_REPO, "toolkit-tools": tplan.TOOLS_REPO}


@dataclass(frozen=True)
class Removal:
    image_id: str
    names: tuple[str, ...]
    why: str
    size: int  # bytes, as buildah reports the image (its layers may be shared)

    def to_json(self) -> dict[str, Any]:
        return {"image_id": self.image_id, "names": list(self.names), "why": self.why,
                "size": self.size}


def plan_prune(available: set[str], current: set[str]) -> list[Removal]:
    """`available`: kernels the archive has; `current`: the base and tools tags a plan
    makes today (they stay)."""
    removals = []
    for row in buildah.images():
        try:
            labels = buildah.labels(row["id"])
        except DtkError:
            continue  # removed by another run while we looked: nothing to do
        why = _why(labels, tuple(row.get("names") or ()), available, current)
        if why:
            removals.append(Removal(row["id"], tuple(row.get("names") or ()), why,
                                    buildah.parse_size(str(row.get("size", "0")))))
    return removals


def _why(labels: dict[str, str], names: tuple[str, ...], available: set[str],
         current: set[str]) -> str:
    kind = labels.get(tplan.KIND_LABEL) or ("toolkit" if labels.get("name") == "driver-toolkit"
                                             and "dtk.plan" in labels else "")
    if not kind.startswith("toolkit"):
        return ""
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
