"""`dtk node load|unload`: KMM's worker sequence on a host, from what `prepare` left.

The worker (kmm-facts 2.7, internal/worker/worker.go) loads a Module this way:

1. `modprobe -rv` the inTreeModulesToRemove whose .ko the kernel ships;
2. with firmwarePath: the host firmware directory into
   /sys/module/firmware_class/parameters/path (only if different), then the
   image's firmware copied there;
3. `modprobe -vd DIR [args.load] moduleName [parameters]` (or rawArgs.load
   verbatim), modulesLoadingOrder as softdeps in the worker's only modprobe
   configuration.

Here DIR is the image's own unpacked tree (no copy), and the worker's
container configuration is a directory of the declaration's own passed with
`modprobe -C`, so the host's /etc/modprobe.d is neither read nor written, as
in the worker's container. Unload is the worker's too: `modprobe -rvd DIR
[args.unload] a b c` (or rawArgs.unload), the copied firmware files removed
and the firmware path cleared if it is still ours.

`plan_load`/`plan_unload` are pure; `execute` runs a plan through dtk.run.
"""

from __future__ import annotations

import itertools
import shutil
from dataclasses import dataclass
from pathlib import Path

from dtk import rootfs
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

    what: str  # remove-in-tree | config | firmware-path | firmware | modprobe | clear-firmware
    argv: tuple[str, ...] = ()
    path: str = ""
    source: str = ""
    text: str = ""


def softdeps(order: tuple[str, ...]) -> str:
    """[a, b, c] → `softdep a pre: b` and `softdep b pre: c`: loading a loads c, b, a."""
    return "".join(f"softdep {a} pre: {b}\n" for a, b in itertools.pairwise(order))


def config_dir(layout: Layout, kernel: str, name: str) -> Path:
    return layout.kernel_state(kernel) / f"{name}.modprobe.d"


def _module_dir(layout: Layout, decl: Declaration, outcome: Outcome) -> str:
    return str(layout.state / outcome.tree / decl.modprobe.dir_name.strip("/"))


def present_in_tree(layout: Layout, kernel: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """Those of `names` K ships as modules (the worker removes only those)."""
    dep = rootfs.resolve(layout.root, f"/lib/modules/{kernel}/modules.dep")
    text = dep.read_text(errors="replace") if dep is not None and dep.is_file() else ""
    shipped = {line.split(":", 1)[0].rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_")
               for line in text.splitlines()}
    return tuple(n for n in names if n.replace("-", "_") in shipped)


def plan_load(layout: Layout, decl: Declaration, outcome: Outcome,
              in_tree: tuple[str, ...]) -> list[Step]:
    probe = decl.modprobe
    conf = config_dir(layout, outcome.kernel, decl.name)
    steps = []
    if in_tree:
        steps.append(Step("remove-in-tree", ("modprobe", "-rv", *in_tree)))
    if probe.firmware_path:
        steps += [Step("firmware-path", path=FIRMWARE_PARAM, text=FIRMWARE_HOST),
                  Step("firmware", path=str(layout.host(FIRMWARE_HOST)),
                       source=str(layout.state / outcome.tree / probe.firmware_path.strip("/")))]
    steps.append(Step("config", path=str(conf / "softdep.conf"),
                      text=softdeps(probe.modules_loading_order or ())))
    raw = probe.raw_args.load if probe.raw_args else None
    if raw:
        argv: tuple[str, ...] = ("modprobe", *raw)
    else:
        args = probe.args.load if probe.args and probe.args.load else ()
        argv = ("modprobe", "-C", str(conf), "-vd", _module_dir(layout, decl, outcome), *args,
                decl.module_name, *probe.parameters)
    steps.append(Step("modprobe", argv))
    return steps


def plan_unload(layout: Layout, decl: Declaration, outcome: Outcome) -> list[Step]:
    probe = decl.modprobe
    conf = config_dir(layout, outcome.kernel, decl.name)
    raw = probe.raw_args.unload if probe.raw_args else None
    if raw:
        argv: tuple[str, ...] = ("modprobe", *raw)
    else:
        args = probe.args.unload if probe.args and probe.args.unload else ()
        names = probe.modules_loading_order or (decl.module_name,)
        argv = ("modprobe", "-C", str(conf), "-rvd", _module_dir(layout, decl, outcome),
                *args, *names)
    steps = [Step("modprobe", argv)]
    if probe.firmware_path:
        steps.append(Step("clear-firmware", path=str(layout.host(FIRMWARE_HOST)),
                          source=str(layout.state / outcome.tree
                                     / probe.firmware_path.strip("/"))))
    return steps


def _copy_firmware(source: Path, dest: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True, symlinks=True)


def _clear_firmware(source: Path, dest: Path) -> None:
    """Remove the files the load copied (directories are kept, as the worker does)."""
    if not source.is_dir():
        return
    for copied in source.rglob("*"):
        target = dest / copied.relative_to(source)
        if not copied.is_dir() and (target.is_file() or target.is_symlink()):
            target.unlink()


def _firmware_path(param: Path, value: str) -> None:
    if param.is_file() and param.read_text().strip() != value:
        param.write_text(value)


def execute(steps: list[Step]) -> str:
    """Run the steps in order; the modprobe output. A failing modprobe raises DtkError
    with modprobe's own words (`could not insert …: Invalid argument`)."""
    said = []
    for step in steps:
        if step.what == "config":
            write_atomic(Path(step.path), step.text.encode())
        elif step.what == "firmware-path":
            _firmware_path(Path(step.path), step.text)
        elif step.what == "firmware":
            _copy_firmware(Path(step.source), Path(step.path))
        elif step.what == "clear-firmware":
            _clear_firmware(Path(step.source), Path(step.path))
        else:
            result = runner.run(list(step.argv), check=False, timeout=120)
            said.append((result.stdout + result.stderr).strip())
            if result.returncode != 0 and step.what == "modprobe":
                raise DtkError(f"{' '.join(step.argv[:1])} failed: "
                               f"{' '.join(said[-1].splitlines()[-2:]) or 'no output'}")
    return "\n".join(s for s in said if s)
