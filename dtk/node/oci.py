"""A driver image onto a host without a container engine: skopeo into an OCI
layout, then its layers verified and unpacked in Python.

Each image gets its own content-addressed tree (named after its manifest
digest and the parts unpacked), so two driver images never share a
`modules.dep`. Registry images are pinned: the first fetch records the
registry's digest for the reference, and later fetches ask for that digest,
so a tag moved in the registry does not change what a host loads.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

import zstandard

from dtk import rootfs, rootwrite
from dtk.digest import parts_digest
from dtk.engine import policy, registry, skopeo
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.node.unpack import apply_layer, check_links, link_target

_REF = "org.opencontainers.image.ref.name"
_MANIFEST = ("application/vnd.oci.image.manifest.v1+json",
             "application/vnd.docker.distribution.manifest.v2+json")
_CHUNK = 1 << 20
_LOCAL = ("oci-archive:", "oci:")
_DIR_READ = os.O_RDONLY | os.O_DIRECTORY


@dataclass(frozen=True)
class Fetched:
    source: str  # what was asked for (the resolved image reference)
    digest: str  # the manifest's digest in the layout
    pinned: str  # the registry digest it was fetched by ("" for local archives)


def transport(image: str) -> str:
    """A skopeo source for an image reference: local archives as given, else a registry."""
    if image.startswith((*_LOCAL, "docker://")):
        return image
    return f"docker://{image}"


def _ref_name(image: str) -> str:
    return "dtk-" + parts_digest(image, length=32)


def fetch(image: str, layout: Path, *, pinned: str = "", tls_verify: bool | None = None,
          authfile: Path | None = None, signed_by_policy: Path | None = None) -> Fetched:
    """Copy `image` into the OCI layout at `layout` (skopeo). A registry reference is
    fetched by the digest `pinned` for it, or by the digest its tag names now (what the
    caller then pins). With `signed_by_policy`, only if that containers policy requires
    the image to be signed (and skopeo then verifies it under that policy)."""
    source = transport(image)
    if source.startswith("docker://"):
        if not pinned:
            digest = skopeo.remote_digest(image, tls_verify=tls_verify, authfile=authfile)
            if digest is None:
                raise DtkError(f"image {image} is not in its registry",
                               hint="build and push it for this kernel (dtk module build)")
            pinned = digest
        ref = registry.parse(image)  # the name without its tag or digest
        repo = f"{ref.registry}/{ref.repository}" if ref.registry else ref.repository
        source = f"docker://{repo}@{pinned}"
    else:
        pinned = ""
    if signed_by_policy is not None:
        policy.require_signature(signed_by_policy, source)
    _repair(layout)
    layout.mkdir(parents=True, exist_ok=True)
    name = _ref_name(image)
    skopeo.copy_to_layout(source, layout, name, tls_verify=tls_verify, authfile=authfile,
                          policy=signed_by_policy)
    return Fetched(image, manifest_digest(layout, name), pinned)


def _repair(layout: Path) -> None:
    """A layout whose index no longer reads (a disk error, a hand edit) is a download
    cache gone bad: it is removed and fetched again, never a permanent failure."""
    if (layout / "index.json").exists() or layout.is_dir():
        try:
            _index(layout)
        except DtkError:
            rootwrite.remove_tree(layout)


def _index(layout: Path) -> dict[str, Any]:
    try:
        data = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError) as exc:
        raise DtkError(f"{layout} is not an OCI layout: {exc}") from None
    if not isinstance(data, dict):
        raise DtkError(f"{layout}/index.json is not an OCI index")
    return data


def manifest_digest(layout: Path, name: str) -> str:
    for entry in _index(layout).get("manifests", []):
        if entry.get("annotations", {}).get(_REF) == name:
            return str(entry["digest"])
    raise DtkError(f"the OCI layout {layout} has no image tagged {name}")


def blob_path(layout: Path, digest: str) -> Path:
    algo, _, hexa = digest.partition(":")
    if algo != "sha256" or len(hexa) != 64 or not all(c in "0123456789abcdef" for c in hexa):
        raise DtkError(f"unsupported or malformed digest {digest!r} in the image")
    return layout / "blobs" / "sha256" / hexa


def verify_blob(layout: Path, digest: str) -> Path:
    """The blob's path once its content hashes to its digest."""
    path = blob_path(layout, digest)
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise DtkError(f"blob {digest} is missing from {layout}: {exc.strerror}",
                       hint="the image or archive is incomplete; fetch or save it again"
                       ) from None
    if "sha256:" + h.hexdigest() != digest:
        raise DtkError(f"blob {digest} in {layout} does not match its digest (it hashes to "
                       f"sha256:{h.hexdigest()})",
                       hint="the image or archive is corrupt; fetch or save it again")
    return path


def read_manifest(layout: Path, digest: str) -> dict[str, Any]:
    try:
        data = json.loads(verify_blob(layout, digest).read_bytes())
    except ValueError:
        raise DtkError(f"manifest {digest} is not JSON") from None
    if not isinstance(data, dict) or data.get("mediaType", _MANIFEST[0]) not in _MANIFEST \
            or not isinstance(data.get("layers"), list):
        raise DtkError(f"{digest} is not an image manifest (media type "
                       f"{data.get('mediaType') if isinstance(data, dict) else None})")
    return data


@contextmanager
def _uncompressed(path: Path) -> Iterator[IO[bytes]]:
    """The layer's tar stream, whatever its compression (by magic, as runtimes do)."""
    with path.open("rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw) as stream:
                yield cast(IO[bytes], stream)
        elif magic == b"\x28\xb5\x2f\xfd":
            with zstandard.ZstdDecompressor().stream_reader(raw) as zstream:
                yield cast(IO[bytes], zstream)
        else:
            yield raw


@dataclass(frozen=True)
class HostModules:
    """Where KMM's worker would show the node's own modules to an image: the image's
    `<modules_dir>/<K>/host` link (written by image authors as `/host/lib/modules/K`,
    or `/lib/modules/K`: the worker mounts the node's modules at both) becomes
    `/lib/modules/K`, the node's own, for `modprobe -d`. This one link is dtk's, not the
    image's: the single way out of a tree. It is absolute in the node's own terms, so it
    holds when a root prepared under --root boots, and dtk's readers never follow it
    (they re-root an absolute link into the tree, or refuse it beneath the tree)."""

    modules_dir: str  # e.g. "opt/lib/modules"


def tree_key(digest: str, prefixes: Sequence[str]) -> str:
    # "trees/2": trees whose links were all checked to stay inside, with dtk's host link.
    return digest.replace(":", "-")[:19] + "-" + parts_digest(digest, *sorted(prefixes),
                                                              "trees/2", length=16)


def _link_host_modules(treefd: int, host: HostModules) -> None:
    """Replace each `<modules_dir>/<K>/host` link the image wrote the KMM way by dtk's
    link to the host's /lib/modules/K (after the tree's own links were checked)."""
    parts = tuple(p for p in host.modules_dir.split("/") if p)
    found = rootfs.open_at(treefd, host.modules_dir, rootfs.Mode.NOFOLLOW, _DIR_READ)
    if found is None:
        return
    try:
        for kernel, info in rootfs.entries(found.fd):
            if not stat.S_ISDIR(info.st_mode):
                continue
            kdir = rootwrite.open_dir(found.fd, kernel)
            if kdir is None:
                continue
            try:
                _relink(kdir, (*parts, kernel, "host"), kernel)
            finally:
                os.close(kdir)
    finally:
        found.close()


def _relink(kdir: int, link: tuple[str, ...], kernel: str) -> None:
    try:
        text = os.readlink("host", dir_fd=kdir)
    except OSError:
        return  # no link named host (a directory, a file, or nothing)
    kmm_ways = {link_target(link, f"{base}/{kernel}", "") for base in
                ("/host/lib/modules", "/lib/modules")}
    if text in kmm_ways:
        rootwrite.make_symlink(kdir, "host", f"/lib/modules/{kernel}")


def unpack(layout: Path, digest: str, trees: Path, prefixes: Sequence[str],
           host: HostModules | None = None) -> Path:
    """The image's `prefixes` in its own tree under `trees` (made once per content,
    published by one rename): its links checked to stay inside, then dtk's link to the
    host's modules (`host`)."""
    final = trees / tree_key(digest, prefixes)
    if final.is_dir():
        return final
    manifest = read_manifest(layout, digest)
    trees.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=trees, prefix=".unpack-"))
    try:
        workfd = rootfs.open_root(work)
        try:
            _apply_all(workfd, layout, manifest, prefixes)
            check_links(workfd)
            if host is not None:
                _link_host_modules(workfd, host)
        finally:
            os.close(workfd)
        try:
            work.rename(final)
        except OSError:
            if not final.is_dir():  # else another run unpacked the same content first
                raise
            rootwrite.remove_tree(work)
    except BaseException:
        rootwrite.remove_tree(work)
        raise
    return final


def _apply_all(workfd: int, layout: Path, manifest: dict[str, Any],
               prefixes: Sequence[str]) -> None:
    for n, layer in enumerate(manifest["layers"]):
        where = f"layer {n + 1} ({layer.get('digest')})"
        path = verify_blob(layout, str(layer.get("digest")))
        with _uncompressed(path) as stream:
            try:
                apply_layer(workfd, stream, prefixes, where)
            except (EOFError, zstandard.ZstdError, gzip.BadGzipFile, zlib.error) as exc:
                raise DtkError(f"{where} cannot be decompressed: {exc}",
                               hint="the image or archive is corrupt") from None


def prune(layout: Path, keep: set[str]) -> None:
    """Forget every image in the layout whose manifest digest is not in `keep`, and the
    blobs only they used (the layout is a download cache: a kernel's image stays only
    while an outcome names it). A layout that no longer reads is removed whole."""
    if not (layout / "index.json").is_file():
        return
    try:
        index = _index(layout)
        kept = [m for m in index.get("manifests", []) if m.get("digest") in keep]
        used: set[str] = set()
        for entry in kept:
            digest = str(entry["digest"])
            manifest = read_manifest(layout, digest)
            used |= {digest, str(manifest.get("config", {}).get("digest", "")),
                     *(str(layer.get("digest")) for layer in manifest["layers"])}
    except (DtkError, KeyError, AttributeError, TypeError):
        rootwrite.remove_tree(layout)
        return
    write_atomic(layout / "index.json", json.dumps({**index, "manifests": kept}).encode())
    blobs = layout / "blobs" / "sha256"
    for blob in blobs.iterdir() if blobs.is_dir() else ():
        if f"sha256:{blob.name}" not in used:
            blob.unlink()
