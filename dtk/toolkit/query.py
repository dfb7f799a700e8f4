"""Read what a built toolkit holds: release JSON, package list, labels, size."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dtk.engine import buildah
from dtk.errors import DtkError
from dtk.toolkit import plan as tplan


@dataclass(frozen=True)
class ToolkitInfo:
    name: str
    image_id: str
    created: str  # ISO 8601
    release: dict[str, str]
    labels: dict[str, str]
    packages: list[tuple[str, str, str]]
    size: int  # bytes
    layers: list[str]

    def to_json(self) -> dict[str, Any]:
        # The fields `toolkit list` has keep its names, so one parser reads both.
        return {
            "name": self.name, "image_id": self.image_id, "created": self.created,
            "size": self.size, "kernel": self.labels.get("kernel-version", ""),
            "rt_kernel": self.labels.get("kernel-rt-version", ""), "release": self.release,
            "labels": self.labels, "layers": self.layers,
            "packages": [{"name": n, "version": v, "arch": a} for n, v, a in self.packages],
        }


def list_toolkits() -> list[dict[str, Any]]:
    """Toolkit images in local storage, newest first: full ids, sizes in bytes, ISO times."""
    rows = []
    for image in buildah.images(f"{tplan.TOOLKIT_REPO}:*"):
        for name in image.get("names") or []:
            try:
                labels = buildah.labels(name)
                size = buildah.image_size(name)
            except DtkError:
                continue  # removed while we looked
            rows.append({
                "name": name, "image_id": image["id"],
                "created": str(image.get("createdatraw", "")),
                "size": size,
                "kernel": labels.get("kernel-version", ""),
                "rt_kernel": labels.get("kernel-rt-version", ""),
            })
    return sorted(rows, key=lambda r: str(r["created"]), reverse=True)


def inspect_toolkit(name: str) -> ToolkitInfo:
    data = buildah.inspect(name)
    labels = dict(data.get("OCIv1", {}).get("config", {}).get("Labels") or {})
    if labels.get("name") != "driver-toolkit":
        raise DtkError(f"{name} is not a driver toolkit (no name=driver-toolkit label)",
                       hint="list toolkits with 'dtk toolkit list'")
    with buildah.working_container(name) as ctr, ctr.mounted() as root:
        release = json.loads((root / tplan.RELEASE_JSON.lstrip("/")).read_text())
        rows = (root / tplan.PACKAGE_LIST.lstrip("/")).read_text().splitlines()
    packages = [tuple(r.split("\t")) for r in rows if r.count("\t") == 2]
    return ToolkitInfo(name, str(data["FromImageID"]), str(data.get("OCIv1", {}).get(
        "created", "")), release, labels,
                       [(p[0], p[1], p[2]) for p in packages], buildah.image_size(name),
                       list(data["OCIv1"]["rootfs"]["diff_ids"]))
