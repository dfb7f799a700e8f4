"""The guest side of a VM test: its init script, its configuration, and the
parsing of what it reports.

The init script runs KMM's worker load sequence (internal/worker/worker.go)
under busybox sh, with kmod's modprobe, and reports over the second serial
port (/dev/ttyS1, a file on the host) in a line protocol:

    @@dtk step NAME UPTIME           entering a step (so a crash names the step)
    @@dtk kv KEY VALUE               a fact (kernel release, taint, …)
    @@dtk begin NAME / @@dtk end NAME   a captured text section
    @@dtk exit CODE STEP             the worker's exit status, last line

The host derives the verdict from the exit status, or from its absence (the
kernel died, or the VM ran out of time); the console is only kept as a log.
Pure: no I/O.
"""

from __future__ import annotations

import enum
import itertools
import shlex
from dataclasses import dataclass, field

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


INIT_SCRIPT = r"""#!/bin/busybox sh
# dtk VM init: KMM's worker load sequence; results go to /dev/ttyS1.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/usr/libexec/kmod:/sbin:/usr/sbin:/bin:/usr/bin
# busybox sh runs its own applets before anything on PATH; kmod's modprobe
# (the one KMM's worker uses) is therefore called by its path.
MODPROBE=/usr/libexec/kmod/modprobe
mount -t proc proc /proc
echo $MODPROBE >/proc/sys/kernel/modprobe
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 3>/dev/ttyS1

say() { echo "@@dtk $*" >&3; }
section() { echo "@@dtk begin $1" >&3; cat "$2" >&3 2>/dev/null; echo "@@dtk end $1" >&3; }
finish() { say "exit $1 $STEP"; exec poweroff -f; }
step() { STEP=$1; read -r up _ </proc/uptime; say "step $1 $up"; }
tainted() { cat /proc/sys/kernel/tainted; }

# run_limited NAME CMD...: CMD in the background, output in /tmp/NAME.out.
# A module init that never returns leaves modprobe in uninterruptible sleep,
# which no signal ends, so the shell polls and gives up instead of waiting.
run_limited() {
    name=$1; shift
    "$@" >/tmp/$name.out 2>&1 &
    pid=$!
    read -r up _ </proc/uptime
    deadline=$(( ${up%.*} + DTK_STEP_TIMEOUT ))
    while :; do
        state=
        read -r _ _ state _ 2>/dev/null </proc/$pid/stat
        if [ -z "$state" ] || [ "$state" = Z ]; then break; fi
        read -r up _ </proc/uptime
        if [ ${up%.*} -ge $deadline ]; then
            section $name /tmp/$name.out
            section stack /proc/$pid/stack
            dmesg >/tmp/dmesg.out; section dmesg /tmp/dmesg.out
            say "kv taint $(tainted)"
            finish 30
        fi
        usleep 50000
    done
    wait $pid
}

died() { [ $(( $(tainted) & 128 )) -ne 0 ]; }

crash_check() {
    if died; then
        dmesg >/tmp/dmesg.out; section dmesg /tmp/dmesg.out
        say "kv taint $(tainted)"
        finish 20
    fi
}

STEP=setup
[ -r /dtk/config ] || finish 40
. /dtk/config
say "kv release $(uname -r)"
say "kv module $DTK_MODULE"
step boot
mkdir -p /host/lib && ln -s /lib/modules /host/lib/modules
dmesg -c >/tmp/boot-dmesg.out
[ -n "$DTK_KEEP_LOG" ] && section boot-dmesg /tmp/boot-dmesg.out

# The node as KMM finds it: in-tree modules that the worker will remove are
# loaded, and so are the in-tree dependencies the user asked to preload.
step node
for m in $DTK_PRELOAD $DTK_NODE_LOADED; do
    run_limited node $MODPROBE -v "$m" || { section node /tmp/node.out; finish 40; }
done

step remove-in-tree
if [ -n "$DTK_REMOVE" ]; then
    run_limited remove $MODPROBE -rv $DTK_REMOVE
    section remove /tmp/remove.out
fi

if [ -n "$DTK_FIRMWARE_SRC" ]; then
    step firmware
    fwpath=/sys/module/firmware_class/parameters/path
    [ "$(cat $fwpath)" = "$DTK_FIRMWARE_HOST" ] || echo -n "$DTK_FIRMWARE_HOST" >$fwpath
    mkdir -p "$DTK_FIRMWARE_HOST"
    cp -R "$DTK_FIRMWARE_SRC"/. "$DTK_FIRMWARE_HOST"/
fi

step load
eval "set -- $DTK_LOAD_ARGV"
run_limited load $MODPROBE "$@"
rc=$?
section load /tmp/load.out
crash_check
if [ $rc -ne 0 ]; then
    dmesg >/tmp/dmesg.out; section dmesg /tmp/dmesg.out
    finish 10
fi

step verify
live=no
[ -d "/sys/module/$DTK_MODULE" ] && grep -q "^$DTK_MODULE .* Live " /proc/modules && live=yes
say "kv live $live"
say "kv taint $(tainted)"
grep "^$DTK_MODULE " /proc/modules >/tmp/proc-modules.out
section proc-modules /tmp/proc-modules.out
if [ $live != yes ]; then
    dmesg >/tmp/dmesg.out; section dmesg /tmp/dmesg.out
    finish 11
fi

check_rc=0
if [ -n "$DTK_CHECK" ]; then
    step check
    run_limited check sh -c "$DTK_CHECK"
    check_rc=$?
    section check /tmp/check.out
    say "kv check-status $check_rc"
    crash_check
fi

step unload
eval "set -- $DTK_UNLOAD_ARGV"
run_limited unload $MODPROBE "$@"
unload_rc=$?
section unload /tmp/unload.out
dmesg >/tmp/dmesg.out; section dmesg /tmp/dmesg.out
crash_check
[ $check_rc -ne 0 ] && finish 12
[ $unload_rc -ne 0 ] || [ -d "/sys/module/$DTK_MODULE" ] && finish 13
finish 0
"""


@dataclass(frozen=True)
class GuestConfig:
    """What the guest worker does, in KMM's terms."""

    module: str  # moduleName, as modprobe takes it
    dir_name: str = "/opt"  # dirName
    parameters: tuple[str, ...] = ()  # parameters
    load_args: tuple[str, ...] = ("-v",)  # args.load (KMM's default is -v)
    unload_args: tuple[str, ...] = ("-rv",)  # args.unload
    loading_order: tuple[str, ...] = ()  # modulesLoadingOrder
    in_tree_to_remove: tuple[str, ...] = ()  # inTreeModulesToRemove present in K
    preload: tuple[str, ...] = ()  # in-tree modules loaded before the worker runs
    firmware_src: str = ""  # where the image's firmware lands in the guest
    firmware_host: str = "/var/lib/firmware"  # KMM midstream's default
    check: str = ""
    step_timeout_s: int = 20
    keep_log: bool = False

    @property
    def kernel_name(self) -> str:
        """The name /sys/module and /proc/modules show."""
        return self.module.replace("-", "_")

    def load_argv(self) -> list[str]:
        return [*self.load_args, "-d", self.dir_name, self.module, *self.parameters]

    def unload_argv(self) -> list[str]:
        names = list(self.loading_order) or [self.module]
        return [*self.unload_args, "-d", self.dir_name, *names]


def render_config(config: GuestConfig) -> str:
    """The shell fragment the init script sources."""
    values = {
        "DTK_MODULE": config.kernel_name,
        "DTK_LOAD_ARGV": shlex.join(config.load_argv()),
        "DTK_UNLOAD_ARGV": shlex.join(config.unload_argv()),
        "DTK_REMOVE": " ".join(config.in_tree_to_remove),
        "DTK_NODE_LOADED": " ".join(config.in_tree_to_remove),
        "DTK_PRELOAD": " ".join(config.preload),
        "DTK_FIRMWARE_SRC": config.firmware_src,
        "DTK_FIRMWARE_HOST": config.firmware_host,
        "DTK_CHECK": config.check,
        "DTK_STEP_TIMEOUT": str(config.step_timeout_s),
        "DTK_KEEP_LOG": "1" if config.keep_log else "",
    }
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in values.items())


def render_softdeps(order: tuple[str, ...]) -> str:
    """KMM's modulesLoadingOrder [a, b, c] → `softdep a pre: b`, `softdep b pre: c`:
    loading a loads c, then b, then a."""
    return "".join(f"softdep {a} pre: {b}\n" for a, b in itertools.pairwise(order))


@dataclass
class Report:
    """What the guest said, parsed from the result channel."""

    steps: list[tuple[str, float]] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    exit_step: str = ""

    @property
    def last_step(self) -> str:
        return self.steps[-1][0] if self.steps else ""


def parse_report(text: str) -> Report:
    report = Report()
    current: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if current is not None:
            if line == f"@@dtk end {current}":
                report.sections[current] = "\n".join(lines)
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
        elif kind == "exit":
            code, _, step = rest.partition(" ")
            report.exit_code, report.exit_step = int(code), step
    if current is not None:  # the guest died mid-section: keep what arrived
        report.sections[current] = "\n".join(lines)
    return report


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
