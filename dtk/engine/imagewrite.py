"""A new image = a base image + one layer made from a directory tree, in one `skopeo copy`.

A driver image is the small base plus the modules one build left. Made with
buildah it costs five buildah processes (from, copy, config, commit, rm: about
0.3 s a cell, more than a small module's whole compile in a large matrix), and
the files are copied twice on the way (into the container, then into the
committed layer). Here dtk writes the layer tar itself from its staged tree, the
image config from the base's, and hands the OCI layout to one `skopeo copy` into
container storage, which reuses the base's layers already there. The image gets
its name only once complete (containers/image tags after committing), so a
failure leaves no half-written image under it.

The layer is reproducible: entries sorted, owned by root, modification time 0
(as `buildah --timestamp 0` writes them), so the same modules make the same
layer digest on every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from dtk import paths
from dtk import run as runner
from dtk.engine import buildah, registry, skopeo
from dtk.errors import DtkError
from dtk.lock import locked

_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER = "application/vnd.oci.image.layer.v1.tar"
_REF = "dtk"
_TIMEOUT = 600


def add_layer(base: str, base_id: str, tree: Path, dest: str, *,
              labels: Mapping[str, str], created_by: str) -> str:
    """Write `dest` = `base` (whose image id is `base_id`) + the files under `tree` as
    one layer, with `labels` added to the base's; return the new image's id.

    `tree` must be dtk's own (a staged copy, nothing another process may change): its
    files go into the layer as they are, links as links."""
    source = _base_layout(base, base_id)
    work_root = paths.cache_dir() / "tmp"
    work_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dtk-image-", dir=work_root) as tmp:
        layout = Path(tmp)
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        manifest = _read_json(source, _index_manifest(source))
        config = _read_json(source, manifest["config"]["digest"])
        for layer in manifest["layers"]:
            _link_blob(source, layout, layer["digest"])
        layer_digest, layer_size = _write_layer(tree, blobs)
        config = _derive_config(config, layer_digest, labels, created_by)
        config_digest, config_size = _write_blob(blobs, _dumps(config))
        manifest = {**manifest, "config": {"mediaType": _CONFIG, "digest": config_digest,
                                           "size": config_size},
                    "layers": [*manifest["layers"], {"mediaType": _LAYER,
                                                     "digest": layer_digest,
                                                     "size": layer_size}]}
        manifest.pop("annotations", None)
        manifest_digest, manifest_size = _write_blob(blobs, _dumps(manifest))
        _write_index(layout, manifest_digest, manifest_size)
        runner.run(skopeo.command("copy", "--quiet", f"oci:{layout}:{_REF}",
                                  f"containers-storage:{local_name(dest)}"), timeout=_TIMEOUT,
                   what=f"writing the image {dest} to container storage failed")
    return config_digest.removeprefix("sha256:")  # storage's image id is the config's digest


def local_name(name: str) -> str:
    """`name` as buildah names it: containers/image alone would read `mod:tag` as
    docker.io/library/mod:tag, buildah reads it as localhost/mod:tag."""
    buildah.ref(name)
    named_host = registry.parse(name).registry or name.startswith("localhost/")
    return name if named_host else f"localhost/{name}"


def _base_layout(base: str, base_id: str) -> Path:
    """`base` as an OCI layout in dtk's cache, exported once per image id (4-5 MB for
    the kmod base) and shared by every cell and every dtk process."""
    layout = paths.cache_dir() / "oci-base" / base_id
    if (layout / "index.json").is_file():
        return layout
    with locked(paths.cache_dir() / "locks" / f"oci-base-{base_id[:16]}", "exporting " + base):
        if (layout / "index.json").is_file():
            return layout
        layout.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=layout.parent))
        try:
            runner.run(skopeo.command("copy", "--quiet",
                                      f"containers-storage:{local_name(base)}",
                                      f"oci:{staging}:{_REF}"), timeout=_TIMEOUT,
                       what=f"exporting {base} from container storage failed")
            got = _read_json(staging, _index_manifest(staging))["config"]["digest"]
            if got != f"sha256:{base_id}":  # the tag moved to another image meanwhile
                raise DtkError(f"{base} is no longer image {base_id[:12]}",
                               hint="run the command again")
            staging.rename(layout)  # whole, or not at all
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return layout


def _index_manifest(layout: Path) -> str:
    index = json.loads((layout / "index.json").read_text())
    return str(index["manifests"][0]["digest"])


def _read_json(layout: Path, digest: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_blob_path(layout, digest).read_bytes())
    return data


def _blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algorithm / hexdigest


def _link_blob(source: Path, layout: Path, digest: str) -> None:
    """The base's layers, for skopeo to read if storage lost them: linked, not copied."""
    target = _blob_path(layout, digest)
    try:
        os.link(_blob_path(source, digest), target)
    except OSError:
        shutil.copyfile(_blob_path(source, digest), target)


def _derive_config(base: dict[str, Any], layer_digest: str, labels: Mapping[str, str],
                   created_by: str) -> dict[str, Any]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    inner = dict(base.get("config") or {})
    inner["Labels"] = {**(inner.get("Labels") or {}), **labels}
    rootfs = {"type": "layers", "diff_ids": [*base["rootfs"]["diff_ids"], layer_digest]}
    history = [*(base.get("history") or []), {"created": now, "created_by": created_by}]
    return {**base, "created": now, "config": inner, "rootfs": rootfs, "history": history}


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def _write_blob(blobs: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def _write_index(layout: Path, digest: str, size: int) -> None:
    index = {"schemaVersion": 2, "manifests": [
        {"mediaType": _MANIFEST, "digest": digest, "size": size,
         "annotations": {"org.opencontainers.image.ref.name": _REF}}]}
    (layout / "index.json").write_bytes(_dumps(index))


class _Hashing:
    """A file that hashes what is written to it (the layer's digest in the same pass)."""

    def __init__(self, sink: IO[bytes]) -> None:
        self.sink, self.sha, self.size = sink, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.sink.write(data)


def _write_layer(tree: Path, blobs: Path) -> tuple[str, int]:
    with tempfile.NamedTemporaryFile(dir=blobs, delete=False) as raw:
        out = _Hashing(raw)
        with tarfile.open(fileobj=cast(IO[bytes], out), mode="w|",
                          format=tarfile.PAX_FORMAT) as tar:
            for inner, host in _entries(tree):
                _add(tar, inner, host)
    digest = out.sha.hexdigest()
    Path(raw.name).rename(blobs / digest)
    return f"sha256:{digest}", out.size


def _entries(tree: Path, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """(name in the layer, path here), parents before children, in a fixed order."""
    for entry in sorted(os.scandir(tree), key=lambda e: e.name):
        inner = f"{prefix}{entry.name}"
        yield inner, Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _entries(Path(entry.path), inner + "/")


def _add(tar: tarfile.TarFile, inner: str, host: Path) -> None:
    info = tarfile.TarInfo(inner)
    st = host.lstat()
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    if host.is_symlink():
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, str(host.readlink()), 0o777
        tar.addfile(info)
    elif host.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    elif host.is_file():
        info.size, info.mode = st.st_size, 0o755 if st.st_mode & 0o111 else 0o644
        with host.open("rb") as data:
            tar.addfile(info, data)
