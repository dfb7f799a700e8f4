"""dtk sign against the kernel's own sign-file, openssl and modinfo; KMM-style image signing."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from dtk import rootfs
from dtk import run as runner
from dtk.engine import buildah
from dtk.kernel import keyring
from dtk.kernel import modsig as sigmod
from dtk.kmod import elf, keygen, sign
from dtk.toolkit.images import ToolkitImage

pytestmark = pytest.mark.integration
DTK = str(Path(__file__).parent.parent.parent / ".venv" / "bin" / "dtk")


@pytest.fixture(scope="module")
def kit(toolkit_61: ToolkitImage, kernel_61: str,
        tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sign-file and a few real modules (signatures stripped), copied out of the toolkit."""
    out = tmp_path_factory.mktemp("kit")
    line = ".".join(kernel_61.split(".")[:2])
    with buildah.working_container(toolkit_61.name) as ctr, ctr.mounted() as root:
        tool = rootfs.resolve(root, f"/usr/lib/linux-kbuild-{line}/scripts/sign-file")
        assert tool is not None, "the toolkit has no sign-file"
        shutil.copy2(tool, out / "sign-file")
        for rel in ("drivers/usb/storage/usb-storage.ko", "lib/crc7.ko", "fs/ext4/ext4.ko"):
            host = rootfs.resolve(root, f"/lib/modules/{kernel_61}/kernel/{rel}")
            assert host is not None
            content, sig = sigmod.split(host.read_bytes())
            assert sig is not None
            (out / Path(rel).name).write_bytes(content)
    runner.run(["openssl", "req", "-new", "-x509", "-newkey", "rsa:3072", "-nodes", "-days", "30",
                "-subj", "/CN=openssl made key/O=dtk tests", "-keyout", str(out / "o.key"),
                "-out", str(out / "o.crt"), "-addext", "extendedKeyUsage=codeSigning"],
               timeout=120)
    keygen.keygen(out, "dtk made key")
    return out


KEYS = {"openssl": ("o.key", "o.crt"), "dtk": ("signing_key.pem", "signing_cert.pem")}


@pytest.mark.parametrize("module", ["usb-storage.ko", "crc7.ko", "ext4.ko"])
@pytest.mark.parametrize("hash_algo", ["sha256", "sha384", "sha512", "sha3-256"])
@pytest.mark.parametrize("keys", ["openssl", "dtk"])
@pytest.mark.parametrize("key_id", [False, True])
def test_byte_identical_to_sign_file(*, kit: Path, tmp_path: Path, module: str, hash_algo: str,
                                     keys: str, key_id: bool) -> None:
    key, cert = (kit / name for name in KEYS[keys])
    reference = tmp_path / "reference.ko"
    ours = tmp_path / "ours.ko"
    shutil.copyfile(kit / module, reference)
    runner.run([str(kit / "sign-file"), *(["-k"] if key_id else []), hash_algo, str(key),
                str(cert), str(reference)], timeout=120)
    sign.sign_file(kit / module, sign.make_signer(key, cert, hash_algo, key_id), dest=ours)
    assert ours.read_bytes() == reference.read_bytes()


def test_openssl_and_modinfo_accept_the_signature(kit: Path, tmp_path: Path) -> None:
    key, cert = kit / "signing_key.pem", kit / "signing_cert.pem"
    signed = tmp_path / "usb-storage.ko"
    sign.sign_file(kit / "usb-storage.ko", sign.make_signer(key, cert), dest=signed)
    content, sig = sigmod.split(signed.read_bytes())
    assert sig is not None
    (tmp_path / "content").write_bytes(content)
    (tmp_path / "sig.p7").write_bytes(sig.pkcs7)
    runner.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
                str(tmp_path / "sig.p7"), "-content", str(tmp_path / "content"), "-certfile",
                str(cert), "-CAfile", str(cert), "-purpose", "any", "-out", "/dev/null"],
               timeout=60)
    info = runner.run(["modinfo", str(signed)], timeout=60).stdout
    serial = keyring.load_cert(cert).serial_number
    key_id = elf.colon_hex(serial.to_bytes((serial.bit_length() + 7) // 8, "big"))
    assert "signer:         dtk made key" in info
    assert f"sig_key:        {key_id}" in info
    assert "sig_hashalgo:   sha256" in info
    tampered = bytearray(signed.read_bytes())
    tampered[4096] ^= 0x40
    (tmp_path / "content").write_bytes(bytes(tampered[: len(content)]))
    bad = runner.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
                      str(tmp_path / "sig.p7"), "-content", str(tmp_path / "content"),
                      "-certfile", str(cert), "-CAfile", str(cert), "-purpose", "any",
                      "-out", "/dev/null"], timeout=60, check=False)
    assert bad.returncode != 0


@pytest.fixture
def unsigned_image(kit: Path) -> Iterator[tuple[str, str]]:
    """A KMM-layout image for a kernel whose name changes when normalized (+ → _)."""
    release = "6.12.117+deb12-rt-amd64"
    name = f"localhost/dtk-test-unsigned-{uuid.uuid4().hex[:8]}:{release.replace('+', '_')}"
    with buildah.working_container("scratch") as ctr:
        ctr.copy_in(kit / "crc7.ko", f"/opt/lib/modules/{release}/extra/crc7.ko")
        ctr.copy_in(kit / "usb-storage.ko", f"/opt/lib/modules/{release}/usb-storage.ko")
        ctr.commit(name)
    yield name, release
    buildah.remove_image(name)


def test_sign_image_like_kmm(kit: Path, unsigned_image: tuple[str, str]) -> None:
    unsigned, release = unsigned_image
    signed = unsigned.replace("unsigned", "signed")
    key, cert = kit / "signing_key.pem", kit / "signing_cert.pem"
    result = runner.run([DTK, "sign", "--unsigned-image", unsigned, "--kernel", release,
                         "--output", signed,
                         "--key", str(key), "--cert", str(cert), "--files-to-sign",
                         "/opt/lib/modules/${KERNEL_FULL_VERSION}/extra/*.ko",
                         "--files-to-sign", "/opt/lib/modules/$KERNEL_FULL_VERSION/*.ko"],
                        timeout=300)
    try:
        assert "2 module(s) signed" in result.stdout
        verified = runner.run([DTK, "verify", signed, "--cert", str(cert)], timeout=300,
                              check=False)
        assert verified.returncode == 0, verified.stdout
        # An image's modules are worded as a file's are (sign.verify_bytes' words).
        assert verified.stdout.count("), verified") == 2, verified.stdout
        original = runner.run([DTK, "verify", unsigned, "--cert", str(cert)], timeout=300,
                              check=False)
        assert original.returncode == 1  # the unsigned image is untouched
        file_words = runner.run([DTK, "verify", str(kit / "crc7.ko"), "--cert", str(cert)],
                                timeout=300, check=False).stdout
        assert [line.split()[-1] for line in original.stdout.splitlines()[2:]] == \
            [file_words.splitlines()[2].split()[-1]] * 2 == ["unsigned"] * 2
        secret = serialization.load_pem_private_key(key.read_bytes(), None).private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption())
        with buildah.working_container(signed) as ctr, ctr.mounted() as root:
            for path in root.rglob("*"):
                if path.is_file():
                    data = path.read_bytes()
                    assert secret[-64:] not in data and b"PRIVATE KEY" not in data
    finally:
        buildah.remove_image(signed)


def test_a_glob_that_matches_nothing_creates_no_image(kit: Path,
                                                      unsigned_image: tuple[str, str]) -> None:
    unsigned, release = unsigned_image
    target = f"localhost/dtk-test-never-{uuid.uuid4().hex[:8]}:x"
    result = runner.run([DTK, "sign", "--unsigned-image", unsigned, "--kernel", release,
                         "--output", target,
                         "--key", str(kit / "signing_key.pem"), "--cert",
                         str(kit / "signing_cert.pem"), "--files-to-sign",
                         "/opt/lib/modules/${KERNEL_FULL_VERSION}/*.ko",
                         "--files-to-sign", "/opt/lib/modules/${KERNEL_FULL_VERSION}/nope/*.ko"],
                        timeout=300, check=False)
    assert result.returncode == 2
    assert "matches no file" in result.stderr
    assert not buildah.image_exists(target)


def test_an_image_whose_links_leave_its_root_is_refused(tmp_path: Path) -> None:
    name = f"localhost/dtk-test-evil-{uuid.uuid4().hex[:8]}:1"
    bait = tmp_path / "bait.ko"
    bait.write_text("not in the image")
    with buildah.working_container("scratch") as ctr:
        with ctr.mounted() as root:
            mods = root / "opt/lib/modules/6.1.0-56-amd64"
            mods.mkdir(parents=True)
            (mods / "evil.ko").symlink_to("../" * 12 + str(bait).lstrip("/"))
        ctr.commit(name)
    try:
        result = runner.run([DTK, "inspect", name], timeout=120, check=False)
        assert result.returncode == 2
        assert "climbs above the image root" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        buildah.remove_image(name)


# Debian's kmod is built without zlib (`modinfo --version`: -ZLIB), so gzip modules
# cannot be read by it; the unit tests cover dtk's own gzip round trip.
@pytest.mark.parametrize("kind", ["xz", "zstd"])
def test_kmod_reads_our_signed_compressed_modules(kit: Path, tmp_path: Path, kind: str) -> None:
    target = tmp_path / f"crc7.ko.{'zst' if kind == 'zstd' else kind}"
    target.write_bytes(sign.compress((kit / "crc7.ko").read_bytes(), kind))
    sign.sign_file(target, sign.make_signer(kit / "signing_key.pem", kit / "signing_cert.pem"))
    info = runner.run(["modinfo", str(target)], timeout=60).stdout
    assert "signer:         dtk made key" in info
    assert "name:           crc7" in info
