"""What became of each cell, and the driver image contract every built image meets."""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dtk import rootfs
from dtk.errors import DtkError
from dtk.kernel import depindex, modfile

TAIL_LINES = 15
# KMM's worker runs `/bin/sh -c "mkdir -p …; cp -R …"` in the image and its pull check
# `/bin/sh -c "exit 0"`; modprobe comes from the worker's own image, not the kmod image.
KMM_TOOLS = ("sh", "cp", "mkdir")
# What `dtk build` promises besides: people load its images by hand with modprobe.
REQUIRED_TOOLS = (*KMM_TOOLS, "modprobe")
_BIN_DIRS = ("bin", "usr/bin", "sbin", "usr/sbin")


@dataclass(frozen=True)
class Layout:
    """Where an image's modules live (KMM's `dirName`) and which tools it must hold."""

    dir_name: str = "/opt"
    tools: tuple[str, ...] = REQUIRED_TOOLS

    @property
    def modules_dir(self) -> str:
        return f"{self.dir_name.rstrip('/')}/lib/modules"


class CellFailedError(DtkError):
    """A build step failed; `output` holds the lines that say why (compiler, dkms)."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


class Status(enum.StrEnum):
    BUILT = "built"
    FAILED = "failed"
    EXCLUDED = "excluded"


@dataclass(frozen=True)
class Outcome:
    module: str
    kernel: str
    status: Status
    image: str
    image_id: str = ""
    cached: bool = False
    modules: tuple[str, ...] = ()  # "name=version"
    reason: str = ""
    tail: tuple[str, ...] = ()
    log: str = ""
    pushed: str = ""  # the pushed digest, only once the registry has the whole image
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=())
    shared: bool = False  # cached: taken from the registry cache (--cache), not found here
    # A failure that says nothing about the cell's inputs (this machine's disk or memory,
    # a registry, a tool, dtk itself): another run, elsewhere, may well succeed.
    retry: bool = False

    @property
    def state(self) -> str:
        """The status as a table shows it, with where a result not made now came from."""
        if self.cached:
            where = "registry cache" if self.shared else (
                "local cache" if self.status is Status.BUILT else "remembered")
            return f"{self.status.value} ({where})"
        return self.status.value

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("modules", "tail", "notes"):
            data[key] = list(data[key])
        data["status"] = self.status.value
        data["seconds"] = round(self.seconds, 1)
        return data


# buildah's own epilogue after a failing RUN step says nothing the lines before it do not.
_NOISE = re.compile(r"^(subprocess exited with status \d+|Error: exit status \d+)$")


# What the machine, not the package, says when a build fails: a full disk or quota
# (strerror of ENOSPC, EDQUOT), no memory (ENOMEM; gcc's xmalloc and its "virtual
# memory exhausted"), the OOM killer taking the compiler (gcc: "Killed signal
# terminated program cc1"), or the build killed by a signal from outside (dtk's own
# words). Exact phrases: a source line quoted in a compiler error must not match.
_MACHINE_FAULT = re.compile(
    r"No space left on device|Disk quota exceeded|Cannot allocate memory|"
    r"virtual memory exhausted|out of memory allocating \d+ bytes|"
    r"Killed signal terminated program|killed by signal \d+")


def machine_fault(log: str) -> str | None:
    """The words in a failed build's log that blame the machine, if any."""
    m = _MACHINE_FAULT.search(log)
    return m[0] if m else None


def tail_of(text: str, lines: int = TAIL_LINES) -> tuple[str, ...]:
    kept = [line for line in text.rstrip().splitlines() if not _NOISE.match(line.strip())]
    return tuple(kept[-lines:])


def find_modules(root: Path, kernel: str,
                 layout: Layout = Layout()) -> list[tuple[str, Path]]:
    """The module files of `kernel` in an image root, as (path in the image, host
    path), checking KMM's layout on the way. Read through `dtk.rootfs`: a link
    in the image never leads dtk out of it."""
    base = f"{layout.modules_dir}/{kernel}"
    moddir = rootfs.resolve(root, base)
    if moddir is None or not moddir.is_dir():
        raise DtkError(f"the image has no {base}",
                       hint=f"KMM loads modules from {layout.modules_dir}/<kernel>/ "
                            "(copy the .ko files there in the final stage)")
    modules = [(inner, host) for inner, host in rootfs.walk_files(root, base)
               if modfile.is_module(inner)]
    if not modules:
        raise DtkError(f"the image has no .ko file under {base}")
    check_index(root, base, kernel, [inner for inner, _ in modules])
    missing = [tool for tool in layout.tools
               if not any(rootfs.resolve(root, f"/{d}/{tool}") for d in _BIN_DIRS)]
    if missing:
        raise DtkError("the image lacks " + ", ".join(missing) + ", which KMM's worker runs",
                       hint="base the final stage on ${DTK_BASE} (busybox and kmod) or any "
                            "image with a shell, coreutils and kmod")
    return modules


def check_index(root: Path, base: str, kernel: str, modules: list[str]) -> None:
    """What kmod's `modprobe -d /opt NAME` reads: `modules.dep.bin`, listing every module.

    The text modules.dep is not enough: kmod ignores it (busybox's depmod writes
    only that), and a depmod that indexed another kernel (`uname -r` of the build
    host) leaves this kernel's directory without an index."""
    fix = (f"run kmod's depmod for this kernel in the final stage: 'depmod -b /opt {kernel}' "
           "(DTK_BASE's depmod is kmod's, and without a version indexes the only kernel "
           "under /opt/lib/modules)")
    index = rootfs.resolve(root, f"{base}/modules.dep.bin")
    if index is None or not index.is_file():
        plain = rootfs.resolve(root, f"{base}/modules.dep")
        why = (" (only the text modules.dep, which busybox's depmod writes and kmod ignores)"
               if plain is not None and plain.is_file() else "")
        raise DtkError(f"the image has no {base}/modules.dep.bin{why}: KMM's worker "
                       f"(kmod's modprobe -d /opt) would say 'Module not found'", hint=fix)
    try:
        listed = depindex.dep_entries(index.read_bytes())
    except depindex.DepIndexError as exc:
        raise DtkError(f"{base}/modules.dep.bin: {exc}", hint=fix) from None
    prefix = base + "/"
    paths = {p if p.startswith("/") else prefix + p for p in listed.values()}
    missing = [m for m in modules if m not in paths]
    if missing:
        names = ", ".join(modfile.module_name(m) for m in missing)
        raise DtkError(f"{base}/modules.dep.bin does not list {names}: kmod's modprobe -d "
                       "/opt would not find it", hint=fix)


def module_versions(modules: list[tuple[str, Path]]) -> tuple[str, ...]:
    """'name=version' for each module, from its .modinfo."""
    out = []
    for inner, host in modules:
        version = modfile.peek(host.read_bytes(), inner).first("version") or "-"
        out.append(f"{inner.rsplit('/', 1)[-1].split('.ko')[0]}={version}")
    return tuple(out)
