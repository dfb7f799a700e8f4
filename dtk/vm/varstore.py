"""OVMF variable stores: checked, read, and given MOKs offline.

A store is the firmware's flash (the edk2 variable store in a firmware volume). dtk reads
and writes it with `virt-fw-vars` from virt-firmware (PyPI, GPL-2.0-only: run as a
program, never imported), after checking its inputs itself: virt-fw-vars answers a file
that is not a store, or a private key given as a certificate, with a Python traceback.

A MOK enrolled offline is what MokManager writes after `mokutil --import` (compared byte
for byte by the tests): `MokList`, attributes NV+BS, under shim's GUID, holding one EFI
signature list per certificate (type X.509, owner shim's GUID, the DER certificate).
"""

from __future__ import annotations

import datetime
import json
import shutil
import struct
import sysconfig
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from dtk import run as runner
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.kernel.keyring import parse_cert, validity

SHIM_GUID = uuid.UUID("605dab50-e046-4300-abb6-3dd810dd8b23")  # MokList's and its owner's
_CERT_X509 = uuid.UUID("a5c059a1-94e4-4aa7-87b5-ab155c2bf072")  # EFI_CERT_X509_GUID
_NV_DATA_FV = uuid.UUID("fff12b8d-7696-4c8b-a985-2747075b4f50")  # EFI_SYSTEM_NV_DATA_FV_GUID
_AUTH_VARIABLES = uuid.UUID("aaf32c78-947b-439a-a180-2e144ec37792")  # gEfiAuthenticatedVariableGuid
_VARIABLES = uuid.UUID("ddcf3616-3275-4164-98b6-fe85707ffe7d")  # gEfiVariableGuid
STORE_SIZE = 540672  # OVMF_VARS_4M.fd: what OVMF_CODE_4M.secboot.fd is built for
_TIMEOUT_S = 120


def check_store(data: bytes, where: str) -> None:
    """Refuse what is not an edk2 variable store for the 4 MB firmware (what OVMF's
    Secure Boot build needs), before any tool reads it."""
    hint = ("give an OVMF_VARS_4M-style store (Debian's ovmf ships OVMF_VARS_4M.ms.fd), "
            "or leave --vars out for that one")
    if len(data) != STORE_SIZE:
        raise DtkError(f"{where} is not an OVMF variable store for the 4 MB firmware: it has "
                       f"{len(data)} bytes, not {STORE_SIZE}", hint=hint)
    fv_guid = uuid.UUID(bytes_le=data[16:32])
    (fv_length,) = struct.unpack_from("<Q", data, 32)
    (header_length,) = struct.unpack_from("<H", data, 48)
    problem = ""
    if data[40:44] != b"_FVH" or fv_guid != _NV_DATA_FV:
        problem = "no firmware volume of variables at its start (_FVH, the NV data GUID)"
    elif fv_length != STORE_SIZE or not 56 <= header_length < 4096:
        problem = f"a firmware volume header that does not fit the file ({fv_length} bytes)"
    elif uuid.UUID(bytes_le=data[header_length:header_length + 16]) not in \
            (_AUTH_VARIABLES, _VARIABLES):
        problem = "no variable store header after the firmware volume header"
    if problem:
        raise DtkError(f"{where} is not an OVMF variable store: {problem}", hint=hint)


def check_certificate(data: bytes, where: str, now: datetime.datetime | None = None) -> bytes:
    """The DER of a certificate fit to enrol as a MOK; refused before any tool reads it:
    not a certificate, a key shim and the kernel cannot use, or outside its dates."""
    cert = parse_cert(data, where)
    if not isinstance(cert.public_key(), rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise DtkError(f"{where} holds neither an RSA nor an ECDSA key; the kernel verifies "
                       "module signatures with those only", hint="make one: dtk keygen")
    now = now or datetime.datetime.now(datetime.UTC)
    before, after = validity(cert)
    if now > after:
        raise DtkError(f"{where} expired on {after:%Y-%m-%d}: dtk does not "
                       "enrol an expired certificate (shim and the kernel do not check dates, "
                       "so a forgotten key would go on being trusted)",
                       hint="make a new key and certificate: dtk keygen, and sign again")
    if now < before:
        raise DtkError(f"{where} is valid only from {before:%Y-%m-%d}",
                       hint="check the clock of the machine that made it, or make a new one")
    return cert.public_bytes(Encoding.DER)


def signature_list(der: bytes, owner: uuid.UUID = SHIM_GUID) -> bytes:
    """One EFI_SIGNATURE_LIST (UEFI 2.x §32.4.1) holding one X.509 certificate:
    SignatureType, ListSize, HeaderSize (0), SignatureSize, then owner GUID + DER."""
    entry = owner.bytes_le + der
    return _CERT_X509.bytes_le + struct.pack("<III", 28 + len(entry), 0, len(entry)) + entry


def mok_list(ders: tuple[bytes, ...]) -> bytes:
    """MokList's data for these certificates, in order."""
    return b"".join(signature_list(d) for d in ders)


@dataclass(frozen=True)
class Variable:
    guid: str
    attributes: int
    data: bytes


def program() -> str:
    """virt-fw-vars, beside the Python dtk runs on (its virtual environment), else PATH."""
    here = Path(sysconfig.get_path("scripts")) / "virt-fw-vars"
    if here.is_file():
        return str(here)
    found = shutil.which("virt-fw-vars")
    if found is None:
        raise DtkError("virt-fw-vars (PyPI virt-firmware) is not installed",
                       hint="run 'make deps', or pip install virt-firmware beside dtk")
    return found


def read_variables(store: Path) -> dict[str, Variable]:
    """Every variable of a store that check_store accepted, by name."""
    with tempfile.TemporaryDirectory(prefix="dtk-vars-") as tmp:
        out = Path(tmp) / "vars.json"
        runner.run([program(), "-i", str(store), "--output-json", str(out)], timeout=_TIMEOUT_S,
                   what=f"virt-fw-vars could not read {store}")
        data = json.loads(out.read_text())
    return {v["name"]: Variable(v["guid"], int(v["attr"]), bytes.fromhex(v["data"]))
            for v in data.get("variables", [])}


def check_secure_boot(variables: dict[str, Variable], where: str) -> None:
    """A store whose firmware would boot with Secure Boot off is no Secure Boot proof."""
    if "PK" not in variables:
        raise DtkError(f"{where} enrols no Platform Key (PK): the firmware would boot with "
                       "Secure Boot off", hint="use a store with PK, KEK and db enrolled "
                       "(Debian's OVMF_VARS_4M.ms.fd, the default)")


def add_moks_offline(template: Path, ders: tuple[bytes, ...], dest: Path) -> None:
    """`template` with `ders` in MokList, written to `dest` (atomically): what
    `mokutil --import` and MokManager leave, without booting."""
    with tempfile.TemporaryDirectory(prefix="dtk-vars-") as tmp:
        argv = [program(), "-i", str(template), "-o", str(Path(tmp) / "out.fd")]
        for n, der in enumerate(ders):
            cert = Path(tmp) / f"mok-{n}.der"
            cert.write_bytes(der)
            argv += ["--add-mok", str(SHIM_GUID), str(cert)]
        runner.run(argv, timeout=_TIMEOUT_S, what="virt-fw-vars could not add the MOK")
        write_atomic(dest, (Path(tmp) / "out.fd").read_bytes())

