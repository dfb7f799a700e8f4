"""Which requirements of a containers policy apply to an image, and whether they demand a
signature: scopes as containers-policy.json(5) defines them (most specific match wins;
then the transport's "" default; then the global default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtk.engine import policy
from dtk.errors import DtkError

ACCEPT = [{"type": "insecureAcceptAnything"}]
SIGNED = [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/k.gpg"}]
REJECT = [{"type": "reject"}]
DIGEST = "sha256:" + "a" * 64


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(data))
    return path


def test_the_most_specific_docker_scope_wins() -> None:
    pol = {"default": REJECT, "transports": {"docker": {
        "reg.example:5000/team": SIGNED, "reg.example:5000/team/drv": ACCEPT,
        "*.example": REJECT, "": ACCEPT}}}
    where, found = policy.requirements(pol, f"docker://reg.example:5000/team/drv@{DIGEST}")
    assert (where, found) == ('transports.docker["reg.example:5000/team/drv"]', ACCEPT)
    assert policy.requirements(pol, "docker://reg.example:5000/team/other:1")[1] == SIGNED
    assert policy.requirements(pol, "docker://q.example/x:1")[1] == REJECT  # wildcard
    assert policy.requirements(pol, "docker://elsewhere.test/x:1")[1] == ACCEPT  # ""
    assert policy.requirements({"default": SIGNED}, "docker://r.test/x:1") == (
        "default", SIGNED)


def test_a_short_docker_name_is_matched_fully_expanded() -> None:
    """The man page: docker.io/library/busybox:latest, not busybox:latest."""
    pol = {"default": ACCEPT, "transports": {"docker": {"docker.io/library/busybox": SIGNED}}}
    assert policy.requirements(pol, "docker://busybox:latest")[1] == SIGNED


def test_local_archives_match_their_path_and_the_directories_above(tmp_path: Path) -> None:
    archive = tmp_path / "images" / "drv.tar"
    pol = {"default": ACCEPT, "transports": {
        "oci-archive": {str(tmp_path / "images"): SIGNED},
        "oci": {f"{tmp_path}/layout:v1": REJECT}}}
    assert policy.requirements(pol, f"oci-archive:{archive}")[1] == SIGNED
    assert policy.requirements(pol, f"oci:{tmp_path}/layout:v1")[1] == REJECT
    assert policy.requirements(pol, f"oci:{tmp_path}/layout:v2")[1] == ACCEPT


def test_require_signature_refuses_a_policy_that_accepts_unsigned(tmp_path: Path) -> None:
    path = write(tmp_path, {"default": ACCEPT})
    with pytest.raises(DtkError) as err:
        policy.require_signature(path, "docker://reg.test/drv:1")
    assert "would accept docker://reg.test/drv:1 unsigned" in err.value.message
    assert "insecureAcceptAnything" in err.value.message
    for strict in (SIGNED, REJECT, [{"type": "sigstoreSigned", "keyPath": "/k.pub"}]):
        policy.require_signature(write(tmp_path, {"default": strict}), "docker://reg.test/d:1")


def test_a_missing_or_broken_policy_is_an_error_not_a_pass(tmp_path: Path) -> None:
    with pytest.raises(DtkError, match="there is no containers policy"):
        policy.require_signature(tmp_path / "none.json", "docker://reg.test/d:1")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(DtkError, match="cannot be read"):
        policy.require_signature(broken, "docker://reg.test/d:1")
    with pytest.raises(DtkError, match='no "default"'):
        policy.require_signature(write(tmp_path, {"transports": {}}), "docker://reg.test/d:1")
