"""Session fixtures over the real archive and real toolkits.

Toolkits are expensive (1-2 GB, about a minute each), so they are reused on
purpose: the tags are the same ones `dtk toolkit build` and `make demo` use,
and a rebuild only happens when the plan changes. Kernels are chosen from the
live catalog, not hard-coded, because the archive moves on.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dtk import kernel as kern
from dtk.distro import KernelEntry, aptindex
from dtk.distro.debian import DebianArchive
from dtk.distro.select import open_archive
from dtk.engine import buildah
from dtk.toolkit.images import ToolkitImage, ensure_toolkit
from tests.integration import debpkg

SESSION_INDEX_MINUTES = 24 * 60  # longer than any test session


@pytest.fixture(scope="session", autouse=True)
def own_dtk_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """dtk's state and cache directories for this test session, never the user's own
    (~/.local/state/dtk, ~/.cache/dtk): a test run must not read a workstation owner's
    remembered build failures or records of the images dtk made, nor prune by them.

    State (logs, results, image records) is fresh per session. The cache is a separate
    one kept between sessions (~/.cache/dtk-tests): it holds the package indexes and
    downloads, which are fetched again only when the archive changes, and refetching
    them every session would cost minutes for nothing a test checks. Remembered DKMS
    outcomes are the one part of it that could make one session's result another's,
    so they are dropped at the start. Toolkit images live in container storage, which
    stays shared (they are reused on purpose, see above); tests that prune use their
    own storage."""
    cache = Path.home() / ".cache" / "dtk-tests"
    shutil.rmtree(cache / "dtk" / "build" / "outcomes", ignore_errors=True)
    state = tmp_path_factory.mktemp("xdg-state")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("DTK_CACHE_DIR", "DTK_STATE_DIR"):
            patch.delenv(name, raising=False)
        patch.setenv("XDG_CACHE_HOME", str(cache))
        patch.setenv("XDG_STATE_HOME", str(state))
        # One archive for the whole session: the index is brought up to date once, here,
        # then pinned. The archive publishes while a 20-minute run goes on (Debian's
        # signed kernel packages land after the unsigned ones), and a refresh halfway
        # would give the session's toolkits one plan and a later command another.
        open_archive().index.update()
        patch.setenv(aptindex.MAX_AGE_ENV, str(SESSION_INDEX_MINUTES))
        yield state


@pytest.fixture
def own_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Container storage and dtk state of this test only, for tests that prune (the
    shared storage holds other runs' toolkits and images); emptied afterwards."""
    root = tmp_path / "storage"
    conf = tmp_path / "storage.conf"
    conf.write_text(f'[storage]\ndriver = "vfs"\ngraphroot = "{root}/graph"\n'
                    f'runroot = "{root}/run"\n')
    monkeypatch.setenv("CONTAINERS_STORAGE_CONF", str(conf))
    monkeypatch.setenv("DTK_STATE_DIR", str(tmp_path / "state"))
    assert buildah.images() == []  # really a storage of its own
    yield root
    for cid, _name in buildah.containers():
        buildah.remove_container(cid)
    for row in buildah.images():
        for name in row.get("names") or (row["id"],):
            buildah.remove_image(name)
    shutil.rmtree(root, ignore_errors=True)


def _standard(archive: DebianArchive, line: str) -> list[KernelEntry]:
    entries = [e for e in archive.kernels() if e.line == line and e.flavour == "standard"]
    assert entries, f"the archive has no standard {line} kernel"
    return entries  # newest first


@pytest.fixture(scope="session")
def dtk_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dtk's Debian package, built once per session by `make deb`."""
    return debpkg.build(tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="session")
def archive() -> DebianArchive:
    return open_archive()


@pytest.fixture(scope="session")
def kernel_61(archive: DebianArchive) -> str:
    return _standard(archive, "6.1")[0].release


@pytest.fixture(scope="session")
def kernel_61_rt(kernel_61: str) -> str:
    sibling = kern.parse(kernel_61).rt_sibling()
    assert sibling
    return sibling


@pytest.fixture(scope="session")
def kernel_61_old(archive: DebianArchive) -> str:
    """The oldest 6.1 ABI with headers: a different ABI from kernel_61."""
    return [e for e in _standard(archive, "6.1") if e.has_headers][-1].release


@pytest.fixture(scope="session")
def kernel_612(archive: DebianArchive) -> str:
    return _standard(archive, "6.12")[0].release


@pytest.fixture(scope="session")
def toolkit_61(archive: DebianArchive, kernel_61: str) -> ToolkitImage:
    """The newest 6.1 standard kernel with its RT sibling, in one image."""
    return ensure_toolkit(kernel_61, "auto", distro=archive)


@pytest.fixture(scope="session")
def toolkit_612(archive: DebianArchive, kernel_612: str) -> ToolkitImage:
    return ensure_toolkit(kernel_612, "auto", distro=archive)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _registry_config(root: Path, port: int, extra: str = "") -> Path:
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n" + extra + "log:\n  level: error\n")
    return config


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OCI registry (Debian's docker-registry) on a loopback port: 'HOST:PORT'."""
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = _serve(_registry_config(root, port), address)
    try:
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass(frozen=True)
class AuthRegistry:
    """A loopback registry that wants a user and password (htpasswd, bcrypt)."""

    address: str  # HOST:PORT
    user: str
    password: str

    def dockerconfigjson(self, password: str | None = None) -> str:
        """`.dockerconfigjson` for this registry, as a kubernetes.io/dockerconfigjson
        Secret holds it (another password: credentials the registry refuses)."""
        token = base64.b64encode(f"{self.user}:{password or self.password}".encode()).decode()
        return json.dumps({"auths": {self.address: {"auth": token}}})


def _serve(config: Path, address: str, auth: tuple[str, str] | None = None
           ) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        request = urllib.request.Request(f"http://{address}/v2/")
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=2):  # noqa: S310 (loopback http)
                return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.terminate()
                raise RuntimeError("docker-registry did not start") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthRegistry]:
    """Debian's docker-registry on a loopback port with htpasswd authentication."""
    root = tmp_path_factory.mktemp("auth-registry")
    user, password = "dtk", secrets.token_hex(12)
    htpasswd = subprocess.run(["htpasswd", "-Bbn", user, password], check=True,
                              capture_output=True, text=True).stdout
    (root / "htpasswd").write_text(htpasswd)
    port = free_port()
    config = _registry_config(root, port, "auth:\n  htpasswd:\n    realm: dtk-test\n"
                                          f"    path: {root / 'htpasswd'}\n")
    address = f"127.0.0.1:{port}"
    proc = _serve(config, address, (user, password))
    try:
        yield AuthRegistry(address, user, password)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class RestartableRegistry:
    """An htpasswd registry a test stops and starts again on the same port and storage,
    as a registry restarting under dtk does (its own, so other tests never see it down)."""

    def __init__(self, root: Path) -> None:
        user, password = "dtk", secrets.token_hex(12)
        (root / "htpasswd").write_text(subprocess.run(
            ["htpasswd", "-Bbn", user, password], check=True, capture_output=True,
            text=True).stdout)
        port = free_port()
        self.config = _registry_config(root, port, "auth:\n  htpasswd:\n    realm: dtk-test\n"
                                                   f"    path: {root / 'htpasswd'}\n")
        self.auth = AuthRegistry(f"127.0.0.1:{port}", user, password)
        self.authfile = root / "auth.json"
        self.authfile.write_text(self.auth.dockerconfigjson())
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert self._proc is None
        self._proc = _serve(self.config, self.auth.address,
                            (self.auth.user, self.auth.password))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)
            self._proc = None


@pytest.fixture(scope="module")
def restartable_registry(tmp_path_factory: pytest.TempPathFactory
                         ) -> Iterator[RestartableRegistry]:
    served = RestartableRegistry(tmp_path_factory.mktemp("restartable-registry"))
    served.start()
    try:
        yield served
    finally:
        served.stop()
