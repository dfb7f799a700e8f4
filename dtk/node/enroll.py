"""`dtk node enroll CERT`: a module-signing certificate staged for shim's MokManager the
way a person does it (`mokutil --import`), and what became of it.

Enrolment needs someone at the console: at the next boot MokManager asks to
confirm with the password chosen now. That is the point of MOK (a program
cannot trust a key by itself), and why DKMS refuses to automate it. So dtk
stages it once, says what the person must do, and afterwards only reports:
pending (the request waits for the next boot), enrolled (the certificate is in
MokListRT), or not enrolled (cancelled, or a wrong password: MokManager drops
the request). dtk never stages it again by itself.

The password never reaches a command line: it is turned into a crypt(3)
SHA-512 hash by `openssl passwd -6 -stdin` (read from its stdin) and handed to
mokutil as `--hash-file`; with `--root-pw`, MokManager asks for root's
password instead and nothing is typed here.
"""

from __future__ import annotations

import enum
import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from dtk import run as runner
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.kmod.sign import parse_cert
from dtk.node import hostkeys
from dtk.node.layout import Layout


class State(enum.StrEnum):
    NONE = "none"  # nothing staged by dtk
    PENDING = "pending"  # MokNew waits for MokManager at the next boot
    ENROLLED = "enrolled"
    NOT_ENROLLED = "not enrolled"  # staged, then cancelled or refused at the console


@dataclass(frozen=True)
class Staged:
    fingerprint: str  # sha256 of the DER certificate
    subject: str
    staged_at: str


def certificate(path: Path) -> bytes:
    """The certificate at `path` (PEM or DER) as DER, refused when it is not one or is not
    valid now."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DtkError(f"cannot read {path}: {exc.strerror}") from None
    cert = parse_cert(data, str(path))
    now = datetime.now(UTC)
    before, after = validity(cert)
    if after < now:
        raise DtkError(f"{path} expired on {after:%Y-%m-%d}",
                       hint="make a new key and certificate (dtk keygen), sign the modules "
                            "with it, and enrol that one")
    if before > now:
        raise DtkError(f"{path} is not valid before {before:%Y-%m-%d}",
                       hint="check this machine's clock, or the certificate's dates")
    return cert.public_bytes(Encoding.DER)


def validity(cert: x509.Certificate) -> tuple[datetime, datetime]:
    """(not before, not after), aware. Debian 12's python3-cryptography (38) has only the
    naive UTC properties; the `_utc` ones came with 42 and the naive ones warn there."""
    before = getattr(cert, "not_valid_before_utc", None)
    after = getattr(cert, "not_valid_after_utc", None)
    if before is None or after is None:
        return (cert.not_valid_before.replace(tzinfo=UTC),
                cert.not_valid_after.replace(tzinfo=UTC))
    return before, after


def _state_file(layout: Layout) -> Path:
    return layout.state / "enrollment.json"


def staged(layout: Layout) -> Staged | None:
    try:
        return Staged(**json.loads(_state_file(layout).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def state(layout: Layout, keys: hostkeys.HostKeys | None = None) -> tuple[State, Staged | None]:
    """What became of the last enrolment dtk staged."""
    record = staged(layout)
    if record is None:
        return State.NONE, None
    keys = keys or hostkeys.read(layout)
    if any(_fingerprint(d) == record.fingerprint for d in keys.moks):
        return State.ENROLLED, record
    return (State.PENDING if keys.mok_pending else State.NOT_ENROLLED), record


def _fingerprint(der: bytes) -> str:
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _password_hash(password: str) -> str:
    done = runner.run(["openssl", "passwd", "-6", "-stdin"], input=password + "\n",
                      what="cannot hash the enrolment password")
    return done.stdout.strip()


def stage(layout: Layout, der: bytes, password: str | None) -> State:
    """`mokutil --import` of `der`, with a hashed `password` (None: root's password at
    MokManager). ENROLLED if it already is; else PENDING once staged."""
    layout.machine("dtk node enroll")
    keys = hostkeys.read(layout)
    if not keys.efi:
        raise DtkError("this machine shows no EFI variables (/sys/firmware/efi/efivars): it "
                       "did not boot through UEFI and shim, so it has no MOK list to enrol into",
                       hint="declare the certificate where the kernel trusts it otherwise: "
                            "dtk node add … --cert CERT")
    if der in keys.moks:
        return State.ENROLLED
    with tempfile.TemporaryDirectory(prefix="dtk-enroll-") as tmp:  # 0700: the hash stays ours
        cert_file = Path(tmp) / "cert.der"
        cert_file.write_bytes(der)
        argv = ["mokutil", "--import", str(cert_file)]
        if password is None:
            argv.append("--root-pw")
        else:
            hash_file = Path(tmp) / "password.hash"
            hash_file.write_text(_password_hash(password) + "\n")
            argv += ["--hash-file", str(hash_file)]
        runner.run(argv, what="mokutil could not stage the enrolment",
                   hint="mokutil comes with Debian's mokutil package; it needs efivarfs "
                        "mounted read-write")
    cert = x509.load_der_x509_certificate(der)
    record = Staged(_fingerprint(der), cert.subject.rfc4514_string(),
                    datetime.now(UTC).isoformat(timespec="seconds"))
    write_atomic(_state_file(layout), json.dumps(asdict(record), indent=2).encode())
    return State.PENDING


def next_step(state_now: State, record: Staged | None) -> str:
    """What the person must do now, in one sentence."""
    who = record.subject if record else "the certificate"
    return {
        State.NONE: "nothing staged",
        State.PENDING: f"{who}: reboot, and at the blue MokManager screen choose Enroll MOK, "
                       "Continue, Yes, then type the password chosen when it was staged",
        State.ENROLLED: f"{who} is enrolled: modules signed with it load under Secure Boot",
        State.NOT_ENROLLED: f"{who} was not enrolled (the request was cancelled or the "
                            "password was wrong at MokManager): run dtk node enroll again "
                            "if you want it",
    }[state_now]
