"""The guest side of a VM test: its init script, its configuration, and the
parsing of what it reports.

The init script runs KMM's worker load sequence (internal/worker/worker.go)
under busybox sh, with kmod's modprobe, and reports over the second serial
port (/dev/ttyS1, a file on the host) in a line protocol:

    @@dtk step NAME UPTIME           entering a step (so a crash names the step)
    @@dtk kv KEY VALUE               a fact (kernel release, taint, …)
    @@dtk begin NAME / @@dtk end NAME   a captured text section
    @@dtk exit CODE STEP             the worker's exit status, last line

Many modules in one boot (`dtk prove`): each module's lines are framed by

    @@dtk module NAME                a module begins (NAME: the host's name for it)
    @@dtk done CODE STEP             its worker exit status; the next module follows

and a crash or a hung step ends the boot with `exit` inside that module's frame.

The host derives the verdict from the exit status, or from its absence (the
kernel died, or the VM ran out of time); the console is only kept as a log.
Pure: no I/O.
"""

from __future__ import annotations

import enum
import itertools
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from dtk import scripts

RESULT_PORT = "/dev/ttyS1"
# kmod's tools live here, not in /sbin: while it boots, the kernel execs
# /sbin/modprobe for every request_module (crypto, net families …), and each
# exec of a dynamically linked kmod costs tenths of a second under TCG. init
# points /proc/sys/kernel/modprobe here once the worker may need it.
KMOD_DIR = "/usr/libexec/kmod"
CONFIG_PATH = "/dtk/config"
SOFTDEP_PATH = "/etc/modprobe.d/softdep.conf"


class Exit(enum.IntEnum):
    """The guest worker's exit statuses."""

    OK = 0
    REFUSED = 10  # modprobe failed to load the module
    NOT_LIVE = 11  # modprobe succeeded but the module is not live
    CHECK_FAILED = 12  # the user's check command failed
    UNLOAD_FAILED = 13
    CRASHED = 20  # the kernel oopsed (taint 'D') while loading or using it
    STEP_TIMEOUT = 30  # a step did not finish in time
    SETUP = 40  # the guest could not prepare (e.g. the node-state modules)


def init_script() -> str:
    """The guest's /init (dtk/data/guest-init.sh, checked by shellcheck)."""
    return scripts.text("guest-init.sh")


@dataclass(frozen=True)
class GuestConfig:
    """What the guest worker does, in KMM's terms."""

    module: str  # moduleName, as modprobe takes it
    dir_name: str = "/opt"  # dirName
    parameters: tuple[str, ...] = ()  # parameters
    load_args: tuple[str, ...] = ()  # args.load, after the worker's own `-vd DIR`
    unload_args: tuple[str, ...] = ()  # args.unload, after the worker's own `-rvd DIR`
    loading_order: tuple[str, ...] = ()  # modulesLoadingOrder
    in_tree_to_remove: tuple[str, ...] = ()  # inTreeModulesToRemove present in K
    preload: tuple[str, ...] = ()  # in-tree modules loaded before the worker runs
    firmware_src: str = ""  # where the image's firmware lands in the guest
    firmware_host: str = "/var/lib/firmware"  # KMM midstream's default
    raw_load: tuple[str, ...] = ()  # rawArgs.load: `modprobe RAW…`, everything else ignored
    raw_unload: tuple[str, ...] = ()  # rawArgs.unload
    check: str = ""
    step_timeout_s: int = 20
    keep_log: bool = False

    @property
    def kernel_name(self) -> str:
        """The name /sys/module and /proc/modules show."""
        return self.module.replace("-", "_")

    def load_argv(self) -> list[str]:
        """KMM's worker (internal/worker/worker.go): its own `-vd DIR`, then args.load,
        the module and its parameters; rawArgs alone when given."""
        if self.raw_load:
            return list(self.raw_load)
        return ["-vd", self.dir_name, *self.load_args, self.module, *self.parameters]

    def unload_argv(self) -> list[str]:
        """`-rvd DIR`, args.unload, then modulesLoadingOrder or the module (no
        parameters); rawArgs alone when given. One `modprobe -r` over the whole order,
        without the softdeps (KMM f17d16d: the softdep chain stopped at a module a hard
        dependency had already removed)."""
        if self.raw_unload:
            return list(self.raw_unload)
        names = list(self.loading_order) or [self.module]
        return ["-rvd", self.dir_name, *self.unload_args, *names]

    def unloaded_names(self) -> list[str]:
        """The modules the worker's unload must leave gone (kernel names)."""
        if self.raw_unload:
            return [self.kernel_name]
        return [n.replace("-", "_") for n in (self.loading_order or (self.module,))]


def render_config(config: GuestConfig) -> str:
    """The shell fragment the init script sources."""
    values = {
        "DTK_MODULE": config.kernel_name,
        "DTK_LOAD_ARGV": shlex.join(config.load_argv()),
        "DTK_UNLOAD_ARGV": shlex.join(config.unload_argv()),
        "DTK_UNLOADED": " ".join(config.unloaded_names()),
        "DTK_REMOVE": " ".join(config.in_tree_to_remove),
        "DTK_NODE_LOADED": " ".join(config.in_tree_to_remove),
        "DTK_PRELOAD": " ".join(config.preload),
        "DTK_FIRMWARE_SRC": config.firmware_src,
        "DTK_FIRMWARE_HOST": config.firmware_host,
        "DTK_CHECK": config.check,
        "DTK_STEP_TIMEOUT": str(config.step_timeout_s),
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


@dataclass(frozen=True)
class Unit:
    """One module of a many-module boot: `name` is how its result comes back."""

    name: str
    config: GuestConfig


def render_units(units: Sequence[Unit], step_timeout_s: int) -> str:
    """The shell fragment for a boot that loads `units` one after another (each
    unit's own dirName, check, load and unload arguments)."""
    values = {"DTK_UNITS": " ".join(str(i) for i in range(1, len(units) + 1)),
              "DTK_STEP_TIMEOUT": str(step_timeout_s)}
    for index, unit in enumerate(units, 1):
        if not re.fullmatch(r"[A-Za-z0-9._@+-]+", unit.name):
            raise ValueError(f"unit name {unit.name!r} is not one word")
        values |= {f"DTK_NAME_{index}": unit.name,
                   f"DTK_MODULE_{index}": unit.config.kernel_name,
                   f"DTK_LOAD_ARGV_{index}": shlex.join(unit.config.load_argv()),
                   f"DTK_UNLOAD_ARGV_{index}": shlex.join(unit.config.unload_argv()),
                   f"DTK_CHECK_{index}": unit.config.check}
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def render_softdeps(order: tuple[str, ...]) -> str:
    """KMM's modulesLoadingOrder [a, b, c] → `softdep a pre: b`, `softdep b pre: c`:
    loading a loads c, then b, then a. Written for the load only: KMM's unload pod has
    no softdep file since f17d16d, so the guest removes it before unloading."""
    return "".join(f"softdep {a} pre: {b}\n" for a, b in itertools.pairwise(order))


@dataclass
class Report:
    """What the guest said, parsed from the result channel."""

    steps: list[tuple[str, float]] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    exit_step: str = ""
    torn: str = ""  # a final line cut off or garbled: no exit status can be trusted

    @property
    def last_step(self) -> str:
        return self.steps[-1][0] if self.steps else ""

    def kernel_log(self, *steps: str) -> str:
        """The kernel's lines logged during `steps` (all of it without steps),
        found by the markers the guest writes to /dev/kmsg (without any, a
        log cannot be split: all of it)."""
        text = self.sections.get("dmesg", "")
        out, inside, marked = [], False, False
        for line in text.splitlines():
            marker = _STEP_MARKER.search(line)
            if marker:
                inside, marked = marker.group(1) in steps, True
            elif inside:
                out.append(line)
        return "\n".join(out) if steps and marked else text


_STEP_MARKER = re.compile(r"^(?:\[[\s\d.]+\]\s*)?dtk: step (\S+)$")
_EXIT = re.compile(r"(\d+) (\S+)")


def parse_report(text: str) -> Report:
    report = Report()
    current: str | None = None
    lines: list[str] = []
    complete = text.endswith("\n")
    all_lines = text.splitlines()
    for number, line in enumerate(all_lines, 1):
        if current is not None:
            if line == f"@@dtk end {current}":
                _add_section(report, current, lines)
                current, lines = None, []
            else:
                lines.append(line)
            continue
        if not line.startswith("@@dtk "):
            continue
        kind, _, rest = line[6:].partition(" ")
        if kind == "begin":
            current = rest
        elif kind == "step":
            name, _, up = rest.partition(" ")
            report.steps.append((name, _float(up)))
        elif kind == "kv":
            key, _, value = rest.partition(" ")
            report.facts[key] = value
        elif kind in ("exit", "done"):
            _exit_line(report, rest, whole=complete or number < len(all_lines))
    if current is not None:  # the guest died mid-section: keep what arrived
        _add_section(report, current, lines)
    return report


@dataclass
class Frames:
    """A many-module boot's report: what came before the first module, and each
    module's own frame (whose exit is its `done`, or the boot's end inside it)."""

    preamble: Report
    modules: list[tuple[str, Report]]


def split_report(text: str) -> Frames:
    preamble: list[str] = []
    frames: list[tuple[str, list[str]]] = []
    current: list[str] | None = None
    for line in text.splitlines(keepends=True):
        if line.startswith("@@dtk module "):
            current = []
            frames.append((line[len("@@dtk module "):].strip(), current))
        elif current is not None:
            current.append(line)
            if line.startswith("@@dtk done "):
                current = None  # what follows (the boot's own exit) is no module's
        else:
            preamble.append(line)
    return Frames(parse_report("".join(preamble)),
                  [(name, parse_report("".join(lines))) for name, lines in frames])


def _add_section(report: Report, name: str, lines: list[str]) -> None:
    old = report.sections.get(name)
    report.sections[name] = "\n".join(lines) if old is None else "\n".join([old, *lines])


def _exit_line(report: Report, rest: str, *, whole: bool) -> None:
    """`exit CODE STEP`, newline-terminated. A line cut off by power-off
    ('@@dtk exit 1' of '@@dtk exit 10 load') would read as another status."""
    match = _EXIT.fullmatch(rest)
    if not whole or match is None:
        report.torn = f"@@dtk exit {rest}"
        report.exit_code, report.exit_step = None, ""
        return
    report.exit_code, report.exit_step = int(match.group(1)), match.group(2)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
