"""State another dtk run may read is written atomically (dtk.files.write_atomic).

Every in-place write under dtk/ (`write_text`, `write_bytes`, `open` for writing) is
listed here with why a reader can never see it half-written: a fresh private
directory, a log that is appended to, an output the user named. A new in-place
write of a cache or state file (a memo read by the next run) fails this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

DTK = Path(__file__).parents[2] / "dtk"

# (module, the written path's expression) -> why it is not shared state.
IN_PLACE = {
    ("driver/base.py", "wrapper"): "a fresh temporary root for the base image",
    ("driver/base.py", 'root / "etc/passwd"'): "the same fresh root",
    ("driver/dkms.py", 'out / "eval.sh"'): "a fresh temporary directory per run",
    ("driver/dkms.py", 'out / "meta.sh"'): "the same",
    ("driver/dkms.py", 'out / "cell.sh"'): "the same",
    ("engine/imagewrite.py", 'blobs / digest'): "a fresh temporary layout per image",
    ("engine/imagewrite.py", 'layout / "index.json"'): "the same",
    ("engine/imagewrite.py", 'layout / "oci-layout"'): "the same",
    ("driver/extras.py", "file"): "a fresh temporary build context",
    ("driver/matrix.py", "log_file"): "this run's own log, appended to",
    ("toolkit/images.py", "log_file"): "this run's own log",
    ("toolkit/images.py", 'ctx / "Containerfile"'): "a fresh temporary build context",
    ("toolkit/images.py", "sources"): "a fresh temporary directory",
    ("cli/main.py", "log"): "this run's own log",
    ("kmm/build.py", "log"): "this run's registry log, appended to",
    ("node/declare.py", "path"): "a fresh temporary directory, read back at once",
    ("node/load.py", "param"): "a sysfs parameter (firmware_class.path): the kernel takes it whole",
    ("node/enroll.py", "cert_file"): "a fresh private temporary directory, for mokutil",
    ("node/enroll.py", "hash_file"): "the same",
    ("cli/module.py", "output"): "a file the user named with -o",
    ("cli/module_run.py", "output"): "a file the user named with -o",
    ("run.py", "log_file"): "a log, appended to",
    ("run.py", "self._log_file"): "a console log, appended to",
    ("vm/esp.py", "cfg"): "a fresh temporary directory, for the ESP being made",
    ("vm/chain.py", "spec.result"): "the boot's own result file, emptied before it boots",
    ("vm/chain.py", "console_log"): "the boot's own console log, emptied before it boots",
    ("vm/varstore.py", "cert"): "a fresh temporary directory, read by virt-fw-vars at once",
    ("vm/kernels.py", "lock"): "opened to append nothing: a lock",
    ("vm/cpio.py", "path"): "an initrd in the run's own work directory",
    ("vm/qemu.py", "spec.result"): "the boot's own result file, emptied before it boots",
    ("vm/batch.py", "probe"): "the run's own work directory",
    ("vm/batch.py", "console"): "the same",
    ("vm/vmtest.py", "path"): "the run's own work directory",
    ("vm/vmtest.py", "console"): "the same",
    ("kmm/build.py", "dockerfile"): "a fresh temporary build context",
    ("kmod/keygen.py", "files.cert_pem"): "a new key pair's directory, made for it",
    ("kmod/keygen.py", "files.cert_der"): "the same",
}


def in_place_writes() -> set[tuple[str, str]]:
    found = set()
    for path in DTK.rglob("*.py"):
        module = path.relative_to(DTK).as_posix()
        if module == "files.py":
            continue  # write_atomic itself
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr
            mode = node.args[0] if node.args else None
            writes_mode = isinstance(mode, ast.Constant) and isinstance(mode.value, str) \
                and any(c in mode.value for c in "wa")
            if name in ("write_text", "write_bytes") or (name == "open" and writes_mode):
                target = ast.get_source_segment(source, node.func.value) or "?"
                found.add((module, target))
    return found


def test_every_in_place_write_is_one_no_other_run_reads() -> None:
    unexplained = in_place_writes() - IN_PLACE.keys()
    assert not unexplained, ("write these with dtk.files.write_atomic, or say here why "
                             f"no other run can read them half-written: {sorted(unexplained)}")
