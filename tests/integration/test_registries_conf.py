"""dtk's skopeo calls read the registries.conf that CONTAINERS_REGISTRIES_CONF names, as
its buildah calls do: buildah (1.28) reads the variable, bookworm's skopeo (1.9) does
not, so a remapped or mirrored registry was honoured by builds and ignored by lookups,
pulls and pushes' checks. Against a real loopback registry (Debian's docker-registry)
behind a name that resolves nowhere, remapped to it the containers way (`[[registry]]
prefix/location`)."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dtk.engine import buildah, skopeo
from dtk.engine.registry import RegistryError

pytestmark = pytest.mark.integration

NOWHERE = "dtk-remap.invalid:5000"  # .invalid never resolves (RFC 2606)


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[str]:
    name = f"localhost/dtk-remap-{secrets.token_hex(4)}:1"
    (tmp_path / "f").write_text(secrets.token_hex(8))
    ctr = subprocess.run(["buildah", "from", "scratch"], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        subprocess.run(["buildah", "copy", ctr, str(tmp_path / "f"), "/f"], check=True,
                       capture_output=True)
        subprocess.run(["buildah", "commit", "-q", ctr, name], check=True, capture_output=True)
    finally:
        subprocess.run(["buildah", "rm", ctr], check=True, capture_output=True)
    try:
        yield name
    finally:
        buildah.remove_image(name)


def test_skopeo_reads_the_registries_conf_buildah_reads(
        registry: str, tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = f"dtk-remap-{secrets.token_hex(4)}/tiny:1"
    skopeo.push(tiny, f"{registry}/{repo}")  # loopback: plain HTTP by dtk's rule
    image = f"{NOWHERE}/{repo}"
    with pytest.raises(RegistryError, match="not reachable"):  # the name resolves nowhere
        skopeo.remote_inspect(image, tls_verify=False)
    conf = tmp_path / "registries.conf"
    conf.write_text(f'[[registry]]\nprefix = "{NOWHERE}"\nlocation = "{registry}"\n'
                    "insecure = true\n")
    monkeypatch.setenv("CONTAINERS_REGISTRIES_CONF", str(conf))
    found = skopeo.remote_inspect(image, tls_verify=False)
    assert found is not None and found["Digest"] == skopeo.remote_digest(
        f"{registry}/{repo}")
    assert skopeo.remote_inspect(f"{NOWHERE}/dtk-remap-absent/x:1", tls_verify=False) is None
    pulled = skopeo.pull(image, tls_verify=False)
    try:
        assert buildah.image_id(pulled) == buildah.image_id(tiny)
    finally:
        buildah.remove_image(pulled)
