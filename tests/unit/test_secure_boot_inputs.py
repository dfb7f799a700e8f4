"""Secure Boot inputs a user gets wrong, said before anything is fetched, built or booted:
one screen, exit 2, no traceback, nothing written (dtk's cache stays empty). The same
answer from every command that takes them (vmtest, prove, module vmtest)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from dtk.cli.main import run_cli
from dtk.kmod import keygen

K = "6.1.0-56-amd64"
CRC7 = Path(__file__).parent.parent / "data" / "kmod" / "crc7-6.1.0-56-amd64.ko"
SCREEN = 24  # lines


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("DTK_CACHE_DIR", str(cache))
    return cache


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> keygen.KeyFiles:
    return keygen.keygen(tmp_path_factory.mktemp("keys"), "dtk input test")


def expired_cert(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expired")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - datetime.timedelta(days=800))
            .not_valid_after(now - datetime.timedelta(days=400))
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def answer(capsys: pytest.CaptureFixture[str], argv: list[str], cache: Path) -> str:
    code = run_cli(argv)
    out = capsys.readouterr()
    text = out.out + out.err
    assert code == 2, (argv, text)
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) <= SCREEN, text
    assert not cache.exists() or not any(cache.rglob("*.fd")), "a store was written"
    assert not cache.exists() or not any(cache.rglob("*.img")), "an ESP was written"
    return text


def commands(tmp_path: Path, *options: str) -> list[list[str]]:
    module = tmp_path / "module.yaml"
    if not module.exists():
        module.write_text("apiVersion: kmm.sigs.x-k8s.io/v1beta1\nkind: Module\n"
                          "metadata: {name: m}\nspec: {}\n")
    return [["vmtest", "localhost/dtk-no-such-image:1", "--kernel", K, *options],
            ["prove", "--image", "localhost/dtk-no-such-image:1", "--kernel", K, *options],
            ["module", "vmtest", "-f", str(module), "--kernel", K, *options]]


@pytest.mark.parametrize("kind", ["pem-key", "der-garbage"])
def test_a_certificate_that_is_not_one(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                       keys: keygen.KeyFiles, own_cache: Path,
                                       kind: str) -> None:
    if kind == "pem-key":
        bad = keys.key  # the private key instead of the certificate
    else:
        bad = tmp_path / "cert.der"
        bad.write_bytes(b"\x30\x82\x01\x00" + os.urandom(256))
    for argv in commands(tmp_path, "--enrol", str(bad)):
        text = answer(capsys, argv, own_cache)
        assert f"{bad} is not an X.509 certificate (PEM or DER)" in text, text
        assert "PRIVATE KEY" not in text  # nothing of the key is echoed


def test_an_expired_certificate(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                own_cache: Path) -> None:
    cert = expired_cert(tmp_path / "expired.pem")
    for argv in commands(tmp_path, "--enrol", str(cert), "--enrol-with", "mokmanager"):
        text = answer(capsys, argv, own_cache)
        assert f"{cert} expired on " in text and "dtk keygen" in text, text


@pytest.mark.parametrize("kind", ["random", "short", "code-not-vars"])
def test_a_variable_store_that_is_not_one(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          keys: keygen.KeyFiles, own_cache: Path,
                                          kind: str) -> None:
    store = tmp_path / "vars.fd"
    size = {"random": 540672, "short": 131072, "code-not-vars": 540672}[kind]
    data = bytearray(os.urandom(size))
    if kind == "code-not-vars":  # a firmware volume, but of code, not of variables
        data[40:44] = b"_FVH"
    store.write_bytes(bytes(data))
    for argv in commands(tmp_path, "--enrol", str(keys.cert_pem), "--vars", str(store)):
        text = answer(capsys, argv, own_cache)
        assert f"{store} is not an OVMF variable store" in text, text
        assert "OVMF_VARS_4M.ms.fd" in text  # the fix
    assert store.read_bytes() == bytes(data)  # read, never written


def test_a_key_that_does_not_match_the_certificate(capsys: pytest.CaptureFixture[str],
                                                    tmp_path: Path, keys: keygen.KeyFiles,
                                                    own_cache: Path) -> None:
    """The first step of the path (sign, then enrol the certificate): a key that is not
    the certificate's is refused before a byte is written."""
    other = keygen.keygen(tmp_path / "other", "another key")
    out = tmp_path / "signed.ko"
    text = answer(capsys, ["sign", str(CRC7), "--key", str(other.key), "--cert",
                           str(keys.cert_pem), "-o", str(out)], own_cache)
    assert f"{other.key} is not the private key of {keys.cert_pem}" in text
    assert not out.exists()


def test_vars_without_secure_boot_is_refused(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path, own_cache: Path) -> None:
    store = tmp_path / "vars.fd"
    store.write_bytes(b"\0" * 16)
    text = answer(capsys, ["vmtest", "localhost/x:1", "--kernel", K, "--vars", str(store)],
                  own_cache)
    assert "--vars is for Secure Boot boots" in text
