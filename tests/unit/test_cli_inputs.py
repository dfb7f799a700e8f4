"""The same mistake gets the same answer from every command (exit 2, one screen, the
fix), before any work; and reports show everything a user needs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dtk.cli.main import run_cli
from dtk.kmod import keygen

DATA = Path(__file__).parent.parent / "data" / "kmod"
CRC7 = DATA / "crc7-6.1.0-56-amd64.ko"
K = "6.1.0-56-amd64"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = run_cli(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> keygen.KeyFiles:
    return keygen.keygen(tmp_path_factory.mktemp("keys"), "dtk cli test")


def test_a_directory_where_a_file_belongs(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          keys: keygen.KeyFiles) -> None:
    for argv in (("inspect", str(tmp_path)), ("check", str(tmp_path), "--kernel", K),
                 ("verify", str(tmp_path), "--cert", str(keys.cert_pem)),
                 ("build", "-f", str(tmp_path), "--kernel", K)):
        code, text = run(capsys, *argv)
        assert code == 2, (argv, text)
        assert f"{tmp_path} is a directory" in text, (argv, text)
        assert "does not exist" not in text and "Traceback" not in text


def test_sign_into_a_directory_is_an_error_not_a_traceback(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, keys: keygen.KeyFiles) -> None:
    module = tmp_path / "crc7.ko"
    shutil.copy(CRC7, module)
    code, text = run(capsys, "sign", str(module), "--key", str(keys.key), "--cert",
                     str(keys.cert_pem), "-o", str(tmp_path))
    assert code == 2
    assert f"-o {tmp_path} is a directory" in text and "Traceback" not in text
    assert module.read_bytes() == CRC7.read_bytes()  # nothing was written


def test_verify_says_corrupt_like_inspect(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                          keys: keygen.KeyFiles) -> None:
    cut = tmp_path / "cut.ko"
    cut.write_bytes(CRC7.read_bytes()[:3000])
    answers = [run(capsys, "verify", str(cut), "--cert", str(keys.cert_pem)),
               run(capsys, "inspect", str(cut))]
    for code, text in answers:
        assert code == 2
        assert "not a valid kernel module" in text and "truncated or corrupt" in text
        assert "unsigned" not in text


def test_inspect_takes_several_targets_and_shows_every_field(
        capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    other = tmp_path / "crc7-copy.ko"
    shutil.copy(CRC7, other)
    code, text = run(capsys, "inspect", str(CRC7), str(other))
    assert code == 0
    assert text.count("description: CRC7 calculations") == 2
    for field in ("license:", "retpoline:", "intree:", "name:", "vermagic:", "depends:"):
        assert f"  {field}" in text
    code, text = run(capsys, "inspect", str(CRC7), str(other), "--json")
    assert [m["target"] for m in json.loads(text)] == [str(CRC7), str(other)]


def test_module_parameters_must_be_key_value(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(capsys, "vmtest", "localhost/x:1", "--kernel", K, "--param", "greeting")
    assert code == 2
    assert "'greeting' is not KEY=VALUE" in text


def test_a_kernel_line_or_tag_where_a_release_belongs(capsys: pytest.CaptureFixture[str]) -> None:
    code, text = run(capsys, "check", str(CRC7), "--kernel", "6.1")
    assert code == 2 and "use --kernels 6.1" in text
    code, text = run(capsys, "check", str(CRC7), "--kernel", "6.12.117_deb12-amd64")
    assert code == 2 and "did you mean 6.12.117+deb12-amd64?" in text


def test_sign_reports_in_json(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                              keys: keygen.KeyFiles) -> None:
    module = tmp_path / "crc7.ko"
    shutil.copy(CRC7, module)
    code, text = run(capsys, "sign", str(module), "--key", str(keys.key), "--cert",
                     str(keys.cert_pem), "--json")
    assert code == 0
    assert json.loads(text) == {"signed": str(module), "hash": "sha256",
                                "replaced_signature": True}  # Debian had signed it
