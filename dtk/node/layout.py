"""Where `dtk node` keeps things on a host, under one root (normally /).

Declarations (what the owner asked for) live in /etc/dtk/modules, one KMM
Module file per module; everything dtk derives (fetched images, unpacked
trees, per-kernel results) lives in /var/lib/dtk and can be rebuilt from the
declarations. The root is a prefix so that tests, image builders and a
chroot can act on a tree that is not the running system: DTK_NODE_ROOT or
--root. The kernel's own files (/boot, /lib/modules) are read under it too.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dtk.errors import DtkError
from dtk.k8snames import dns1123_label_problems
from dtk.lock import locked

ROOT_ENV = "DTK_NODE_ROOT"
# A kernel release as `uname -r` prints it and Debian names its packages: it becomes a
# directory name under /var/lib/dtk, so nothing else may pass (no '/', no '..').
_RELEASE = re.compile(r"^[A-Za-z0-9._+~-]+$")


def check_release(release: str) -> str:
    """`release` if it can name a kernel (and a directory); else a DtkError."""
    if not _RELEASE.match(release) or release.startswith(("-", ".")) or ".." in release \
            or len(release) > 200:
        raise DtkError(f"{release!r} is not a kernel release",
                       hint="a release as `uname -r` prints it (letters, digits and . _ + ~ -), "
                            "e.g. 6.1.0-57-amd64")
    return release


def check_name(name: str) -> str:
    """A declaration's name is a file name and a Kubernetes object name (a DNS-1123
    label, which never holds '/' or '..')."""
    problems = dns1123_label_problems(name)
    if problems:
        raise DtkError(f"{name!r} is not a valid declaration name: {'; '.join(problems)}",
                       hint="lower-case letters, digits and '-', at most 63 characters "
                            "(a Kubernetes object name)")
    return name


@dataclass(frozen=True)
class Layout:
    root: Path

    @classmethod
    def from_env(cls, root: Path | None = None) -> Layout:
        return cls(root or Path(os.environ.get(ROOT_ENV) or "/"))

    def host(self, path: str) -> Path:
        """A host path (absolute, as on the running system) under the root."""
        return self.root / path.lstrip("/")

    @property
    def config(self) -> Path:
        return self.host("/etc/dtk/modules")

    @property
    def state(self) -> Path:
        return self.host("/var/lib/dtk")

    def declaration(self, name: str) -> Path:
        return self.config / f"{check_name(name)}.yaml"

    @property
    def oci(self) -> Path:
        """One OCI layout for every fetched image: blobs shared, each image by its tag."""
        return self.state / "oci"

    @property
    def trees(self) -> Path:
        return self.state / "trees"

    def kernel_state(self, kernel: str) -> Path:
        return self.state / "kernels" / check_release(kernel)

    @property
    def is_machine(self) -> bool:
        """Whether this layout is the running machine itself (no --root)."""
        return self.root.resolve() == Path("/")

    def machine(self, doing: str) -> None:
        """Refuse `doing` (something that acts on the running kernel: modprobe, a write
        under /sys) on a root that is not the running machine."""
        if not self.is_machine:
            raise DtkError(f"{doing} acts on the running kernel, and --root {self.root} is "
                           "not the running machine",
                           hint="run it on the machine itself (the boot unit does), without "
                                "--root or DTK_NODE_ROOT")

    def running_kernel(self) -> str:
        """The kernel this root runs: this machine's, only when the root is the machine."""
        if not self.is_machine:
            raise DtkError(f"--root {self.root} is not the running machine, so its kernel is "
                           "not this machine's",
                           hint="name the kernel: --kernel RELEASE")
        return os.uname().release

    @property
    def pins(self) -> Path:
        return self.state / "pins.json"

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time (the kernel hook, the boot unit, the owner's commands):
        they share the OCI layout, the pins and the outcomes. In /run, so that
        nothing of it stays in /var/lib/dtk."""
        with locked(self.host("/run/lock/dtk-node.lock"), "dtk node"):
            yield
