"""Hand-made OCI layouts for the node's unpacking tests: no builder writes hostile
layers, so the tests write the blobs, the manifest and the index themselves."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dtk.node import oci


def oci_layout(root: Path, layers: list[bytes]) -> str:
    """An OCI layout at `root` holding one image (tagged "t") of `layers`; its manifest
    digest."""
    def blob(data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = oci.blob_path(root, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return digest

    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"digest": blob(b"{}"), "size": 2},
                "layers": [{"digest": blob(data), "size": len(data)} for data in layers]}
    digest = blob(json.dumps(manifest).encode())
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"digest": digest, "annotations": {"org.opencontainers.image.ref.name": "t"}}]}))
    return digest
