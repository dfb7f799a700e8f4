"""The files that make a host prepare at `apt upgrade` and load at boot: the
kernel's postinst/postrm hooks (where DKMS puts its own) and dtk-node.service.

Where dtk came as its Debian package, the package owns them (the hooks as conffiles,
the unit enabled by dh_installsystemd) and nothing is written here: a copy in
/etc/systemd/system would shadow the package's unit, and one over a conffile would
make dpkg ask about it at the next upgrade. Elsewhere (a pip install, a virtual
environment) they are written and enabled the way `systemctl enable` does it (a
symlink in sysinit.target.wants), which also works on a root that is not running
(an image build, a chroot); where systemd runs this root, it is told to reload.

The files in dtk/data are the package's; written from here, their `/usr/bin/dtk`
becomes the dtk that is running (its own Python, `-m dtk`), so that a dtk outside
PATH (a virtual environment) is still the one the hook and the unit run.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from dtk import run, scripts
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
# Where a package's units are (Debian 12: /lib; later releases: /usr/lib).
PACKAGE_UNITS = ("/lib/systemd/system", "/usr/lib/systemd/system")
PACKAGED_DTK = "/usr/bin/dtk"  # the path in dtk/data's files: the Debian package's
SYSTEMD_RUNNING = "/run/systemd/system"  # sd_booted(3)'s test


def packaged(layout: Layout) -> bool:
    """Whether a package installed dtk's unit in this root (so its hooks too)."""
    return any(layout.host(f"{d}/{UNIT}").exists() for d in PACKAGE_UNITS)


def running_system(layout: Layout) -> bool:
    """Whether the root is this machine's own, booted with systemd (so systemctl
    reaches the manager of that root, not a stranger's)."""
    return layout.root.resolve() == Path("/") and Path(SYSTEMD_RUNNING).is_dir()


def command(layout: Layout) -> list[str]:
    """How the hooks and the unit run dtk: this dtk (its interpreter, `-m dtk`) when
    the root is this machine's; in another root, the dtk installed there."""
    if layout.root.resolve() == Path("/"):
        return [sys.executable, "-m", "dtk"]
    for path in (PACKAGED_DTK, "/usr/local/bin/dtk"):
        if os.path.lexists(layout.host(path)):
            return [path]
    return [PACKAGED_DTK]  # absent: the hook and the unit say so when they run


def _systemd_quote(word: str) -> str:
    # systemd.service(5), "Command lines": double quotes, with C-style escapes inside.
    if word and not any(c.isspace() or c in "\"'\\;$%" for c in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def rendered(name: str, argv: list[str]) -> str:
    """dtk/data's `name` with the package's dtk replaced by `argv`."""
    text = scripts.text(name)
    if name == UNIT:
        line = " ".join(_systemd_quote(w) for w in argv)
        return text.replace(f"ExecStart={PACKAGED_DTK} ", f"ExecStart={line} ")
    return text.replace(f"{{ {PACKAGED_DTK} ", f"{{ {shlex.join(argv)} ")


def install(layout: Layout) -> list[Path]:
    """Write (or refresh) the hooks and the unit, and enable the unit; idempotent.
    Nothing where the Debian package provides them."""
    if packaged(layout):
        return []
    argv = command(layout)
    written = []
    for name, dest, mode in FILES:
        path = layout.host(dest)
        write_atomic(path, rendered(name, argv).encode(), mode=mode)
        written.append(path)
    link = layout.host(WANTS)
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(f"/etc/systemd/system/{UNIT}")
    written.append(link)
    if running_system(layout):
        run.run(["systemctl", "daemon-reload"], timeout=120,
                what="telling systemd about dtk-node.service",
                hint=f"the unit is written; run 'systemctl daemon-reload' (it reads {UNIT} "
                     "at the next boot anyway)")
    return written
