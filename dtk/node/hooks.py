"""The files that make a host prepare at `apt upgrade` and load at boot: the
kernel's postinst/postrm hooks (where DKMS puts its own) and dtk-node.service,
enabled the way `systemctl enable` does it (a symlink in sysinit.target.wants),
which also works on a root that is not running (an image build, a chroot).
"""

from __future__ import annotations

from pathlib import Path

from dtk import scripts
from dtk.files import write_atomic
from dtk.node.layout import Layout

UNIT = "dtk-node.service"
# (file in dtk/data, where it goes, mode)
FILES = (
    ("node-postinst.sh", "/etc/kernel/postinst.d/dtk-node", 0o755),
    ("node-postrm.sh", "/etc/kernel/postrm.d/dtk-node", 0o755),
    (UNIT, f"/etc/systemd/system/{UNIT}", 0o644),
)
WANTS = f"/etc/systemd/system/sysinit.target.wants/{UNIT}"


def install(layout: Layout) -> list[Path]:
    """Write (or refresh) the hooks and the unit, and enable the unit; idempotent."""
    written = []
    for name, dest, mode in FILES:
        path = layout.host(dest)
        write_atomic(path, scripts.text(name).encode(), mode=mode)
        written.append(path)
    link = layout.host(WANTS)
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(f"/etc/systemd/system/{UNIT}")
    written.append(link)
    return written
