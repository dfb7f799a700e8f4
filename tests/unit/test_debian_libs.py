"""A host runs dtk on Debian 12's own libraries (the package depends on them: python3-
cryptography 38, click 8.1, …), older than the ones the venv tests with. What the node
does with certificates is run here with Debian's python3 and those libraries, from this
checkout: an API newer than Debian's (cryptography's `load_pem_x509_certificates`, the
`not_valid_after_utc` properties) fails here, not at a host's boot."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = r'''
import struct, tempfile, uuid
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from dtk.kmod.keygen import make_certificate
from dtk.node import declare, enroll, hostkeys
from dtk.node.layout import Layout

ders = [make_certificate(rsa.generate_private_key(public_exponent=65537, key_size=2048),
                         name, 30).public_bytes(Encoding.DER) for name in ("a", "b")]
with tempfile.TemporaryDirectory() as tmp:
    root = Path(tmp)
    (root / "c.der").write_bytes(ders[0])
    assert enroll.certificate(root / "c.der") == ders[0]
    settings = declare.Settings(True, tuple(ders))
    doc = declare.image_module("reg.example/x:1", "m", (), "m")
    doc["metadata"]["annotations"] = settings.annotations()
    # A literal mapping: the RE2 binding is built only into the package, not this checkout.
    doc["spec"]["moduleLoader"]["container"]["kernelMappings"] = [
        {"literal": "6.1.0-57-amd64", "containerImage": "reg.example/x:1"}]
    decl = declare.Declaration("m", root / "m.yaml", declare.image_bundle(doc), "")
    assert decl.certificates == tuple(ders), decl.certificates
    entry = uuid.UUID(hostkeys.SHIM).bytes_le + ders[1]
    esl = struct.pack("<16sIII", hostkeys.CERT_X509.bytes_le, 28 + len(entry), 0,
                      len(entry)) + entry
    var = root / "sys/firmware/efi/efivars" / f"MokListRT-{hostkeys.SHIM}"
    var.parent.mkdir(parents=True)
    var.write_bytes(b"\x06\x00\x00\x00" + esl)
    keys = hostkeys.read(Layout(root))
    assert keys.moks == (ders[1],) and hostkeys.describe(ders[1]).startswith("'b'")
print("ok")
'''


def test_the_nodes_certificate_handling_runs_on_debians_libraries(tmp_path: Path) -> None:
    done = subprocess.run(["/usr/bin/python3", "-W", "error::DeprecationWarning", "-c",
                           SCRIPT], capture_output=True, text=True, timeout=120, check=False,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
