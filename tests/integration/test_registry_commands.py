"""Every command that talks to a registry follows one rule and says the same thing,
against a real loopback registry with htpasswd authentication that the test stops
and starts again (Debian's docker-registry)."""

from __future__ import annotations

import http.server
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dtk import run as runner
from dtk.engine import buildah, skopeo
from dtk.kmod import keygen
from tests.integration import kmm_docs as docs
from tests.integration.conftest import RestartableRegistry
from tests.unit.kmm_support import dtk

pytestmark = pytest.mark.integration


def _run(*args: str) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as mp:
        return dtk(mp, *args)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-file image in local storage (what is pushed does not matter here)."""
    name = f"localhost/dtk-regtest-{secrets.token_hex(4)}:1"
    payload = tmp_path_factory.mktemp("tiny") / "f"
    payload.write_text(secrets.token_hex(8))
    ctr = subprocess.run(["buildah", "from", "scratch"], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        subprocess.run(["buildah", "copy", ctr, str(payload), "/f"], check=True,
                       capture_output=True)
        subprocess.run(["buildah", "commit", "-q", ctr, name], check=True, capture_output=True)
    finally:
        subprocess.run(["buildah", "rm", ctr], check=True, capture_output=True)
    try:
        yield name
    finally:
        buildah.remove_image(name)


def _module(path: Path, kernel: str, image: str, reg: RestartableRegistry) -> Path:
    mod = docs.module("regtest", [{"literal": kernel, "containerImage": image}])
    mod["spec"]["imageRepoSecret"] = {"name": "repo"}  # no registryTLS: dtk's rule applies
    return docs.write(path, mod, docs.repo_secret(reg.auth.dockerconfigjson()))


def test_every_command_says_the_same_about_a_registry(
        restartable_registry: RestartableRegistry, tiny: str, kernel_61: str,
        tmp_path: Path) -> None:
    reg = restartable_registry
    dest = f"{reg.auth.address}/regtest-{secrets.token_hex(4)}/tiny:1"
    auth = ("--authfile", str(reg.authfile))
    code, text = _run("toolkit", "push", tiny, dest)
    assert code == 2 and f"the registry at {reg.auth.address} refused the credentials " \
        "(unauthorized)" in text and "--authfile" in text, text
    code, text = _run("toolkit", "push", tiny, dest, "--tls-verify", *auth)
    assert code == 2 and "speaks plain HTTP" in text and "--no-tls-verify" in text, text
    code, text = _run("toolkit", "push", tiny, dest, *auth)  # loopback: plain HTTP
    assert code == 0 and "sha256:" in text, text

    # check, sign and vmtest: the loopback default (no TLS error) and the same causes.
    missing = dest.replace(":1", ":missing")
    code, text = _run("check", missing, "--kernel", kernel_61, *auth)
    assert code == 2 and f"{missing} is not in its registry (manifest unknown)" in text, text
    code, text = _run("check", dest, "--kernel", kernel_61)
    assert code == 2 and "refused the credentials (unauthorized)" in text, text

    files = _module(tmp_path / "m.yaml", kernel_61, dest, reg)
    code, text = _run("module", "plan", "-f", str(files), "--kernel", kernel_61, "--json")
    assert code == 0 and '"where": "registry"' in text, text
    out = tmp_path / "render.yaml"
    code, text = _run("module", "render", "-f", str(files), "--kernel", kernel_61, "-o",
                      str(out))
    assert code == 0, text
    pinned = yaml.safe_load(out.read_text())["spec"]["moduleLoader"]["container"][
        "kernelMappings"][0]["containerImage"]
    assert pinned.startswith(dest.rsplit(":", 1)[0] + "@sha256:")

    keys = keygen.keygen(tmp_path, "dtk regtest")
    reg.stop()
    try:
        started = time.monotonic()
        code, text = _run("toolkit", "push", tiny, dest, *auth)
        refused = f"the registry at {reg.auth.address} is not reachable (connection refused)"
        assert code == 2 and refused in text, text
        assert time.monotonic() - started < 8  # no silent retries of a refused connection
        for args in (("check", dest, "--kernel", kernel_61, *auth),
                     ("vmtest", dest, "--kernel", kernel_61, "--module", "x", *auth),
                     ("sign", "--unsigned-image", dest, "--kernel", kernel_61, "-o",
                      "localhost/dtk-regtest/never:1", "--files-to-sign", "/x.ko", "--key",
                      str(keys.key), "--cert", str(keys.cert_pem), *auth)):
            code, text = _run(*args)
            assert code == 2 and refused in text and "Traceback" not in text, (args, text)
            assert len(text.splitlines()) <= 3, text  # cause and fix, not skopeo's output
        code, text = _run("module", "plan", "-f", str(files), "--kernel", kernel_61)
        assert code == 1 and refused in text, text
        code, text = _run("module", "render", "-f", str(files), "--kernel", kernel_61)
        assert code != 0 and refused in text, text
    finally:
        reg.start()


def test_render_refuses_a_local_only_image_without_allow_local(
        restartable_registry: RestartableRegistry, tiny: str, kernel_61: str,
        tmp_path: Path) -> None:
    files = _module(tmp_path / "m.yaml", kernel_61, tiny, restartable_registry)
    code, text = _run("module", "render", "-f", str(files), "--kernel", kernel_61)
    assert code == 2 and f"{tiny} lives only in local storage" in text, text
    assert "--allow-local" in text
    code, text = _run("module", "render", "-f", str(files), "--kernel", kernel_61,
                      "--allow-local")
    assert code == 0 and "warning:" in text and "@sha256:" in text, text

    never_pushed = f"{restartable_registry.auth.address}/regtest-np/tiny:1"
    buildah.tag(tiny, never_pushed)  # named for the registry, but never pushed there
    try:
        files = _module(tmp_path / "np.yaml", kernel_61, never_pushed, restartable_registry)
        code, text = _run("module", "render", "-f", str(files), "--kernel", kernel_61,
                          "--allow-local")
        assert code == 2, text
        assert f"{never_pushed} is only in local storage, not in its registry" in text
    finally:
        buildah.remove_image(never_pushed)


class _Unavailable(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.end_headers()

    do_HEAD = do_POST = do_PUT = do_GET  # noqa: N815

    def log_message(self, *_args: object) -> None:
        pass


def test_a_registry_that_may_recover_is_retried_with_progress(tiny: str) -> None:
    """A fake: an HTTP server that answers 503 to everything, because a real registry
    cannot be made overloaded on demand; skopeo's answer to it is real."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        dest = f"127.0.0.1:{server.server_address[1]}/regtest/tiny:1"
        code, text = _run("toolkit", "push", tiny, dest)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 2, text
    assert "retrying (2/3)" in text and "retrying (3/3)" in text, text
    assert text.count("error: ") == 1 and "503" in text


def test_from_a_loopback_registry_builds_without_no_tls_verify(
        registry: str, tiny: str, tmp_path: Path) -> None:
    """A Containerfile FROM an image in a loopback registry (plain HTTP, as such
    registries serve) builds with TLS verification left on: the one registry rule
    holds for FROM pulls too. The registry is named through a build arg, as KMM-style
    Dockerfiles name theirs."""
    base = f"{registry}/dtk-test/from-loopback:{secrets.token_hex(4)}"
    skopeo.push(tiny, base)
    built = f"localhost/dtk-test-from-loopback:{secrets.token_hex(4)}"
    cf = tmp_path / "Containerfile"
    cf.write_text("ARG REG=nowhere.invalid\nFROM ${REG}/dtk-test/from-loopback:"
                  f"{base.rsplit(':', 1)[1]}\nLABEL dtk-test=from-loopback\n")
    try:
        assert not buildah.image_exists(base)  # the build must pull it
        # untrusted: as `dtk build` and `dtk module build` run someone else's Containerfile
        buildah.bud(buildah.BuildSpec(cf, tmp_path, built, build_args={"REG": registry},
                                      untrusted=True))
        assert buildah.labels(built)["dtk-test"] == "from-loopback"
        # An explicit --tls-verify is the user's choice, loopback or not (as for skopeo).
        buildah.remove_image(base)
        with pytest.raises(runner.CommandError, match="HTTP response to HTTPS client"):
            buildah.bud(buildah.BuildSpec(cf, tmp_path, built + "-verified",
                                          build_args={"REG": registry}, tls_verify=True))
    finally:
        buildah.remove_image(built)
        buildah.remove_image(base)
