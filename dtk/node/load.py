"""`dtk node load|unload`: KMM's worker sequence on a host, from what `prepare` left.

KMM's worker (kubernetes-sigs/kernel-module-management, internal/worker/worker.go
and cmd/worker/funcs_kmod.go at f17d16d, 2026-07) loads a Module this way, and
so does this module:

1. with firmwarePath: the host firmware directory written into
   /sys/module/firmware_class/parameters/path (KMM writes it whenever it
   differs; here too);
2. `modprobe -rv` of the inTreeModulesToRemove whose file is on the host
   (KMM: a file named `^NAME.ko` anywhere under /lib/modules); a failure fails
   the load, as in KMM;
3. with firmwarePath: the image's firmware copied into the host firmware
   directory (KMM midstream's /var/lib/firmware);
4. `modprobe -vd DIR [args.load] moduleName [parameters]` (or `modprobe
   rawArgs.load`), modulesLoadingOrder as softdeps in the worker's only modprobe
   configuration.

Unload, since KMM@f17d16d: `modprobe -rvd DIR [args.unload]
modulesLoadingOrder…` (or moduleName; or rawArgs.unload) with no softdeps,
then the copied firmware files removed (directories kept). KMM never clears
firmware_class.path, and neither does dtk.

Where dtk differs, on purpose: DIR is the image's own unpacked tree (no copy),
the worker container's configuration is a directory of the declaration's own
passed with `modprobe -C` (the host's /etc/modprobe.d is neither read nor
written, as in the worker's container), `/tmp/<dirName>` in rawArgs (the
worker's path) names that tree, and the firmware is copied by dtk's tree
primitives: no write follows a link in the firmware directory, and an
image's link is kept only if it resolves inside that image's firmware.

`plan_load`/`plan_unload` are pure; `execute` runs a plan through dtk.run.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from dtk import rootfs, rootwrite
from dtk import run as runner
from dtk.errors import DtkError
from dtk.files import write_atomic
from dtk.node.declare import Declaration
from dtk.node.layout import Layout
from dtk.node.prepare import Outcome

FIRMWARE_HOST = "/var/lib/firmware"  # KMM midstream's default (upstream: /lib/firmware)
FIRMWARE_PARAM = "/sys/module/firmware_class/parameters/path"


@dataclass(frozen=True)
class Step:
    """One action: a command (`argv`), or a file written/copied/removed (`path`)."""

    what: str  # firmware-path | remove-in-tree | firmware | config | modprobe | clear-firmware
    argv: tuple[str, ...] = ()
    path: str = ""
    source: str = ""
    text: str = ""


def softdeps(order: tuple[str, ...]) -> str:
    """[a, b, c] → `softdep a pre: b` and `softdep b pre: c`: loading a loads c, b, a."""
    return "".join(f"softdep {a} pre: {b}\n" for a, b in itertools.pairwise(order))


def config_dir(layout: Layout, kernel: str, name: str, action: str = "load") -> Path:
    """The worker container's /etc/modprobe.d for one action: softdeps for load, nothing
    for unload (KMM@f17d16d)."""
    suffix = "" if action == "load" else f".{action}"
    return layout.kernel_state(kernel) / f"{name}{suffix}.modprobe.d"


def _module_dir(layout: Layout, decl: Declaration, outcome: Outcome) -> str:
    return str(layout.state / outcome.tree / decl.modprobe.dir_name.strip("/"))


def present_in_tree(layout: Layout, names: tuple[str, ...]) -> tuple[str, ...]:
    """Those of `names` the worker removes: a file whose name matches `^NAME.ko` anywhere
    under the host's /lib/modules (KMM's FileExists, a Go regexp unescaped; a name that
    is no regexp is skipped, as the worker skips it)."""
    top = layout.host("/lib/modules")
    files: list[str] = []
    for _dirpath, _dirnames, filenames in os.walk(top):  # never follows a link
        files.extend(filenames)
    found = []
    for name in names:
        try:
            pattern = re.compile(f"^{name}.ko")
        except re.error:
            continue
        if any(pattern.search(f) for f in files):
            found.append(name)
    return tuple(found)


def _raw(raw: tuple[str, ...], layout: Layout, decl: Declaration,
         outcome: Outcome) -> tuple[str, ...]:
    """rawArgs as written, the worker's `/tmp/<dirName>` naming the unpacked tree."""
    worker = "/tmp/" + decl.modprobe.dir_name.strip("/")
    mine = _module_dir(layout, decl, outcome)
    return tuple(mine if a == worker else a.replace(f"={worker}", f"={mine}") for a in raw)


def plan_load(layout: Layout, decl: Declaration, outcome: Outcome,
              in_tree: tuple[str, ...]) -> list[Step]:
    probe = decl.modprobe
    conf = config_dir(layout, outcome.kernel, decl.name)
    steps = []
    if probe.firmware_path:
        steps.append(Step("firmware-path", path=FIRMWARE_PARAM, text=FIRMWARE_HOST))
    if in_tree:
        steps.append(Step("remove-in-tree", ("modprobe", "-rv", *in_tree)))
    if probe.firmware_path:
        steps.append(Step("firmware", path=str(layout.host(FIRMWARE_HOST)),
                          source=str(layout.state / outcome.tree
                                     / probe.firmware_path.strip("/"))))
    steps.append(Step("config", path=str(conf / "softdep.conf"),
                      text=softdeps(probe.modules_loading_order or ())))
    raw = probe.raw_args.load if probe.raw_args else None
    if raw:
        argv: tuple[str, ...] = ("modprobe", "-C", str(conf),
                                 *_raw(raw, layout, decl, outcome))
    else:
        args = probe.args.load if probe.args and probe.args.load else ()
        argv = ("modprobe", "-C", str(conf), "-vd", _module_dir(layout, decl, outcome), *args,
                decl.module_name, *probe.parameters)
    steps.append(Step("modprobe", argv))
    return steps


def plan_unload(layout: Layout, decl: Declaration, outcome: Outcome) -> list[Step]:
    probe = decl.modprobe
    conf = config_dir(layout, outcome.kernel, decl.name, "unload")
    raw = probe.raw_args.unload if probe.raw_args else None
    if raw:
        argv: tuple[str, ...] = ("modprobe", "-C", str(conf),
                                 *_raw(raw, layout, decl, outcome))
    else:
        args = probe.args.unload if probe.args and probe.args.unload else ()
        names = probe.modules_loading_order or (decl.module_name,)
        argv = ("modprobe", "-C", str(conf), "-rvd", _module_dir(layout, decl, outcome),
                *args, *names)
    steps = [Step("config", path=str(conf / "softdep.conf"), text=""), Step("modprobe", argv)]
    if probe.firmware_path:
        steps.append(Step("clear-firmware", path=str(layout.host(FIRMWARE_HOST)),
                          source=str(layout.state / outcome.tree
                                     / probe.firmware_path.strip("/"))))
    return steps


def _open_firmware_dest(dest: Path) -> int:
    """The host's firmware directory, made if missing. It and its parents are the host's
    own (an image only ever writes below it), so they are opened as the host has them."""
    dest.mkdir(parents=True, exist_ok=True)
    return os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def copy_firmware(source: Path, dest: Path) -> None:
    """The image's firmware merged into `dest` by descriptor: nothing is written through a
    link there, files and links are replaced by rename (a second boot, another kernel's
    image, another image), and a link of the image is kept only if it resolves inside the
    image's firmware directory."""
    try:
        srcfd = rootfs.open_root(source)
    except rootfs.UnsafePathError:
        return  # the image has no firmware directory: KMM's `cp -R dir/*` copies nothing
    try:
        destfd = _open_firmware_dest(dest)
        try:
            def inside(path: tuple[str, ...], _target: str) -> bool:
                try:
                    found = rootfs.open_at(srcfd, "/".join(path), rootfs.Mode.BENEATH)
                except rootfs.UnsafePathError:
                    return False
                if found is None:
                    return False
                found.close()
                return True

            rootwrite.copy_into(srcfd, destfd, str(source), keep_link=inside)
        finally:
            os.close(destfd)
    finally:
        os.close(srcfd)


def clear_firmware(source: Path, dest: Path) -> None:
    """Remove from `dest` what the load copied: each non-directory of the image's firmware
    at the same place (directories are kept, as the worker does); never through a link."""
    try:
        srcfd = rootfs.open_root(source)
    except rootfs.UnsafePathError:
        return
    try:
        try:
            destfd = rootfs.open_root(dest)
        except rootfs.UnsafePathError:
            return
        try:
            _clear(srcfd, destfd)
        finally:
            os.close(destfd)
    finally:
        os.close(srcfd)


def _clear(srcfd: int, destfd: int) -> None:
    for name, info in rootfs.entries(srcfd):
        if stat.S_ISDIR(info.st_mode):
            sub, out = rootwrite.open_dir(srcfd, name), rootwrite.open_dir(destfd, name)
            try:
                if sub is not None and out is not None:
                    _clear(sub, out)
            finally:
                for fd in (sub, out):
                    if fd is not None:
                        os.close(fd)
            continue
        try:
            there = os.stat(name, dir_fd=destfd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(there):  # a directory at that name is the host's, not ours
            os.unlink(name, dir_fd=destfd)


def _firmware_path(param: Path, value: str) -> None:
    if param.is_file() and param.read_text().strip() != value:
        param.write_text(value)


def execute(steps: list[Step]) -> str:
    """Run the steps in order; the modprobe output. A failing modprobe (or removal of an
    in-tree module, which fails the load in KMM too) raises DtkError with modprobe's own
    words (`could not insert …: Invalid argument`)."""
    said = []
    for step in steps:
        if step.what == "config":
            write_atomic(Path(step.path), step.text.encode())
        elif step.what == "firmware-path":
            _firmware_path(Path(step.path), step.text)
        elif step.what == "firmware":
            copy_firmware(Path(step.source), Path(step.path))
        elif step.what == "clear-firmware":
            clear_firmware(Path(step.source), Path(step.path))
        else:
            result = runner.run(list(step.argv), check=False, timeout=120)
            said.append((result.stdout + result.stderr).strip())
            if result.returncode != 0:
                what = "removing the in-tree modules" if step.what == "remove-in-tree" \
                    else "modprobe"
                raise DtkError(f"{what} failed: "
                               f"{' '.join(said[-1].splitlines()[-2:]) or 'no output'}")
    return "\n".join(s for s in said if s)
