"""Registry names and refusals, read by their structure (dtk.engine.registry).

The error texts are skopeo 1.9.3's own output against Debian's docker-registry,
recorded on this machine (the integration tests produce them live); the
reference grammar is the container tools' (docker/distribution reference)."""

from __future__ import annotations

import tomllib

import pytest

from dtk.engine import buildah, registry
from dtk.engine.registry import Failure


@pytest.mark.parametrize(("image", "where", "loopback"), [
    ("127.0.0.1:5000/a/b:1", "127.0.0.1:5000", True),
    ("docker://127.3.4.5/a/b", "127.3.4.5", True),
    ("[::1]:5000/a/b@sha256:" + "0" * 64, "[::1]:5000", True),
    ("localhost:5000/a/b:1", "localhost:5000", True),
    ("localhost.example.com/a/b:1", "localhost.example.com", False),
    ("localhost.example.com:5000/a:1", "localhost.example.com:5000", False),
    ("127.example.com/a:1", "127.example.com", False),
    ("128.0.0.1:5000/a:1", "128.0.0.1:5000", False),
    ("registry.example.com/ns/a:1", "registry.example.com", False),
])
def test_registry_and_loopback(image: str, where: str, loopback: bool) -> None:
    ref = registry.parse(image)
    assert ref.registry == where
    assert ref.loopback is loopback
    assert registry.tls_verify(image) is not loopback
    assert registry.tls_verify(image, True) is True and registry.tls_verify(image, False) is False


@pytest.mark.parametrize("image", ["localhost/dtk-driver/x:6.1.0-1-amd64", "busybox",
                                   "library/busybox:1", "dtk-driver/x:1"])
def test_local_only_names_have_no_registry(image: str) -> None:
    assert registry.parse(image).registry is None
    assert registry.tls_verify(image) is True  # nothing to talk to; never loosened


def _fatal(msg: str) -> str:
    return ('time="2026-12-03T07:41:55Z" level=info msg="[graphdriver] using prior storage '
            'driver: overlay"\nGetting image source signatures\n'
            f'time="2026-12-03T07:41:55Z" level=fatal msg="{msg}"\n')


_NOT_FOUND = _fatal('Error parsing image name \\"docker://127.0.0.1:5391/a/b:c\\": reading '
                    'manifest c in 127.0.0.1:5391/a/b: manifest unknown: manifest unknown')
_UNAUTH = _fatal('trying to reuse blob sha256:4f4f at destination: checking whether a blob '
                 'sha256:4f4f exists in 127.0.0.1:5391/a/b: unauthorized: authentication '
                 'required')
_HTTP = _fatal('Error parsing image name \\"docker://127.0.0.1:5391/a/b:c\\": pinging '
               'container registry 127.0.0.1:5391: Get \\"https://127.0.0.1:5391/v2/\\": '
               'http: server gave HTTP response to HTTPS client')
_REFUSED = _fatal('trying to reuse blob sha256:4f4f at destination: pinging container '
                  'registry 127.0.0.1:5117: Get \\"http://127.0.0.1:5117/v2/\\": dial tcp '
                  '127.0.0.1:5117: connect: connection refused')


@pytest.mark.parametrize(("output", "failure"), [
    (_NOT_FOUND, Failure.NOT_FOUND), (_UNAUTH, Failure.UNAUTHORIZED),
    (_HTTP, Failure.TLS_MISMATCH), (_REFUSED, Failure.UNREACHABLE),
    (_fatal("reading manifest 1 in r.example.com/a: name unknown: repository name not known "
            "to registry"), Failure.NOT_FOUND),
    (_fatal("reading manifest 1 in r.example.com/a: denied: requested access to the resource "
            "is denied"), Failure.UNAUTHORIZED),
    (_fatal("writing manifest: uploading manifest 1 to r.example.com/a: received unexpected "
            "HTTP status: 502 Bad Gateway"), Failure.TRANSIENT),
    (_fatal("trying to reuse blob sha256:a5a3 at destination: pinging container registry "
            "127.0.0.1:39293: invalid status code from registry 503 (Service Unavailable)"),
     Failure.TRANSIENT),
    (_fatal('reading blob sha256:0: Get \\"https://r.example.com/v2/a/blobs/x\\": read tcp '
            "1.2.3.4:40000->5.6.7.8:443: read: connection reset by peer"), Failure.TRANSIENT),
    (_fatal('pinging container registry r.example.com: Get \\"https://r.example.com/v2/\\": '
            "x509: certificate signed by unknown authority"), Failure.TLS_CERT),
    (_fatal('pinging container registry nowhere.invalid: Get \\"https://nowhere.invalid/'
            'v2/\\": dial tcp: lookup nowhere.invalid: no such host'), Failure.UNREACHABLE),
])
def test_skopeo_answers_are_classified(output: str, failure: Failure) -> None:
    assert registry.classify(output) is failure


@pytest.mark.parametrize("output", [
    # A port, a tag or a digest with 404/401 in it says nothing about the answer.
    _fatal("initializing source containers-storage:localhost/x:404: reference does not "
           "resolve to an image ID: identifier is not an image"),
    _fatal("copying layer to 127.0.0.1:4040/a/b:401: write /var/tmp/x: no space left on "
           "device"),
    _fatal("reading blob sha256:4041f401404: some other failure"),
])
def test_numbers_in_names_are_not_statuses(output: str) -> None:
    assert registry.classify(output) is Failure.OTHER


def test_each_error_is_one_line_of_cause_and_one_of_fix() -> None:
    err = registry.error("127.0.0.1:5117/a/b:1", _REFUSED, "pushing x to 127.0.0.1:5117/a/b:1")
    assert err.message == ("pushing x to 127.0.0.1:5117/a/b:1 failed: the registry at "
                           "127.0.0.1:5117 is not reachable (connection refused)")
    assert err.hint and "\n" not in err.hint
    assert "connection refused" in err.detail and "level=" not in err.detail
    tls = registry.error("127.0.0.1:5391/a/b:c", _HTTP, "looking up 127.0.0.1:5391/a/b:c")
    assert "plain HTTP" in tls.message and tls.hint is not None
    assert "--no-tls-verify" in tls.hint and "registryTLS.insecure" in tls.hint
    auth = registry.error("127.0.0.1:5391/a/b:c", _UNAUTH, "pushing x")
    assert auth.message.endswith("refused the credentials (unauthorized)")
    assert auth.hint is not None and "--authfile" in auth.hint and "imageRepoSecret" in auth.hint


def test_from_images_substitute_global_args_as_the_dockerfile_reference_says() -> None:
    """Dockerfile reference: ARGs declared before the first FROM may be used in FROM
    lines; --build-arg overrides their default; `${V:-word}` / `${V:+word}` are
    supported; options such as --platform precede the image; `\\` continues a line."""
    text = ("# syntax note\nARG REG=127.0.0.1:5000\nARG TAG\nARG EMPTY=\n"
            "FROM --platform=linux/amd64 ${REG}/base:$TAG AS build\n"
            "ARG REG=ignored.example.com\n"
            "FROM ${EMPTY:-localhost:5001}/second \\\n  AS two\n"
            "FROM ${EMPTY:+registry.example.com/}build\n")
    assert buildah.from_images(text, {"TAG": "1"}) == [
        "127.0.0.1:5000/base:1", "localhost:5001/second", "build"]
    assert buildah.from_images(text, {"REG": "registry.example.com", "TAG": "1"})[0] == \
        "registry.example.com/base:1"
    assert registry.loopback_registries(buildah.from_images(text, {"TAG": "1"})) == [
        "127.0.0.1:5000", "localhost:5001"]


def test_registries_conf_marks_loopback_registries_insecure_and_keeps_the_rest() -> None:
    """containers-registries.conf(5), v2: `[[registry]]` tables with `location` and
    `insecure`; a registry the user's file already lists keeps the user's setting; the
    v1 format (`[registries.insecure]`) cannot be mixed with v2 tables."""
    base = ('unqualified-search-registries = ["registry.example.com"]\n'
            '[[registry]]\nlocation = "127.0.0.1:5000"\ninsecure = false\n')
    text = registry.registries_conf(base, ["127.0.0.1:5000", "[::1]:5002"])
    assert text is not None
    data = tomllib.loads(text)
    assert data["unqualified-search-registries"] == ["registry.example.com"]
    assert data["registry"] == [{"location": "127.0.0.1:5000", "insecure": False},
                                {"location": "[::1]:5002", "insecure": True}]
    assert tomllib.loads(registry.registries_conf("", ["localhost:5001"]) or "") == {
        "registry": [{"location": "localhost:5001", "insecure": True}]}
    assert registry.registries_conf('[registries.insecure]\nregistries = []\n', ["a:1"]) is None
    assert registry.registries_conf("not = [toml", ["a:1"]) is None
