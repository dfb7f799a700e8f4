"""The guest looks like a node to the kernel's own module requests (issue 12 §1).

Debian's dm-writeboost-dkms needs libcrc32c, whose init asks the crypto API for
"crc32c" (request_module("crypto-crc32c")) and whose softdep asks kmod for
crc32c: on a node both find crc32c_intel/crc32c_generic in /lib/modules/K.
The guest used to hold only modules.dep's closure, so every libcrc32c user was
refused ("Unknown symbol in module", with no kernel line) while `dtk check`
said it loads. Built with `dtk build --dkms` through the CLI, as a user does,
for the newest 6.1 kernel and its RT sibling; booted by dtk.vm.vmtest.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from dtk.engine import buildah
from dtk.kernel.verdict import Verdict
from dtk.toolkit.images import ToolkitImage
from dtk.vm.guest import GuestConfig
from dtk.vm.vmtest import VmTestSpec, image_for, vmtest

pytestmark = pytest.mark.integration


def dtk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dtk", *args], capture_output=True, text=True,
                          timeout=1800, check=False)


@pytest.fixture(scope="module")
def writeboost(toolkit_61: ToolkitImage) -> Iterator[str]:
    """dm-writeboost images for K and its RT sibling, under a unique repository."""
    repo = f"localhost/dtk-vmreq-{uuid.uuid4().hex[:8]}"
    template = f"{repo}/dm-writeboost:${{KERNEL_FULL_VERSION}}"
    try:
        proc = dtk("build", "--dkms", "dm-writeboost-dkms", "--image", template, "--json",
                   *(a for k in toolkit_61.kernels for a in ("--kernel", k)))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        yield template
    finally:
        for row in buildah.images():
            for name in row.get("names") or ():
                if name.startswith(repo):
                    buildah.remove_image(name)


def test_a_libcrc32c_user_loads_as_on_a_node(writeboost: str, toolkit_61: ToolkitImage) -> None:
    kernels = tuple(toolkit_61.kernels)
    spec = VmTestSpec(writeboost, kernels, GuestConfig(module="dm-writeboost"), timeout_s=90)
    results = {r.kernel: r for r in vmtest(spec)}
    for kernel in kernels:
        r = results[kernel]
        assert r.verdict is Verdict.LOADED, (kernel, r.reason, r.sections.get("load"), r.log)
        # modprobe followed libcrc32c's softdep to modules the guest now holds.
        assert "crc32c_generic.ko" in r.sections["load"], r.sections["load"]
        # The whole ring buffer came back: boot messages and the load step's.
        kernel_log = r.sections["dmesg"]
        assert "Linux version" in kernel_log and "dtk: step load" in kernel_log
        assert "dm_writeboost" in kernel_log

    # What dtk check predicts agrees with what the kernels did.
    for kernel in kernels:
        proc = dtk("check", image_for(writeboost, kernel), "--kernel", kernel, "--json")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        (row,) = json.loads(proc.stdout)
        assert row["loads"] is True
