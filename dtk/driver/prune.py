"""Remove driver images that take disk for nothing.

A rebuild with new inputs re-tags the name, leaving the old image untagged;
an interrupted run can leave a staging image, and a killed one (SIGKILL: no
unwinding) its working containers. All are always safe to remove once their
run is gone.
`everything` also removes tagged driver images and the toolkit-plus-dependencies
layers (all are rebuilt on demand); such a layer whose toolkit is gone is
always removed. Toolkits are not touched here: `dtk toolkit prune` owns them.
Images count only if dtk's own records say it made them (`dtk.engine.made`): an
image built `FROM` a driver image carries its labels, not its id.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from dtk.driver.containerfile import STAGING_REPO, staging_owner
from dtk.engine import buildah, made
from dtk.errors import DtkError


@dataclass(frozen=True)
class Removal:
    image_id: str  # or the container's id, for kind "container"
    names: tuple[str, ...]
    why: str
    kind: str = "image"


def plan_prune(*, everything: bool, older_than_days: float | None = None) -> list[Removal]:
    """Driver images and dead runs' working containers to remove (pure apart from
    listing local storage)."""
    now = time.time()
    removals = [Removal(cid, (name,), "working container of a dtk run that is gone",
                        "container")
                for cid, name in buildah.containers()
                if (owner := buildah.container_owner(name)) and not _alive(owner)]
    rows = buildah.images()
    ids = {row["id"] for row in rows}
    made.forget_missing(ids, now)
    ours = made.records()
    for row in rows:
        names = tuple(row.get("names") or ())
        owners = [staging_owner(n) for n in names if n.startswith(STAGING_REPO + "/")]
        if owners:
            if not any(_alive(pid) for pid in owners):  # a live build is still using it
                removals.append(Removal(row["id"], names, "leftover staging image"))
            continue
        record = ours.get(row["id"])
        if record is None:
            continue  # not an image dtk recorded making, whatever its labels say
        try:
            labels = buildah.labels(row["id"])
        except DtkError:
            continue  # removed by another run while we looked
        if record.kind == "toolkit-extras":
            stale = not any(labels.get("dtk.build.toolkit-digest", "").startswith(i)
                            for i in ids)
            if everything or stale:
                why = "toolkit plus dependencies" + (" of a toolkit that is gone" if stale
                                                     else "")
                removals.append(Removal(row["id"], names, why))
            continue
        if record.kind != "driver":
            continue
        age_days = (now - float(row.get("created", now))) / 86400
        if older_than_days is not None and age_days < older_than_days:
            continue
        if not names:
            removals.append(Removal(row["id"], names, "superseded by a rebuild (untagged)"))
        elif everything or older_than_days is not None:
            removals.append(Removal(row["id"], names, f"driver image, {age_days:.1f} days old"))
    return removals


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False  # named before owners were recorded: nobody can be using it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune(removals: list[Removal]) -> None:
    # Containers first: an image a container was made from cannot be removed.
    for removal in sorted(removals, key=lambda r: r.kind != "container"):
        if removal.kind == "container":
            buildah.remove_container(removal.names[0])
            continue
        buildah.remove_image(removal.image_id if not removal.names else removal.names[0])
        for extra in removal.names[1:]:
            buildah.remove_image(extra)
        if not buildah.image_exists(removal.image_id):
            made.forget(removal.image_id)
