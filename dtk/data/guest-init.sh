#!/bin/busybox sh
# shellcheck shell=sh
# prove_module sets its own arguments (set -- modprobe's argv), takes none:
# shellcheck disable=SC2119,SC2120
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
echo >&3  # the firmware writes to this port too: end its last line before ours
# Step markers go into the kernel's ring buffer (so the host can tell which
# step a kernel message belongs to); /dev/kmsg writes are rate-limited
# (10 per 5 s) unless printk_devkmsg says otherwise.
echo on >/proc/sys/kernel/printk_devkmsg

say() { echo "@@dtk $*" >&3; }
section() { echo "@@dtk begin $1" >&3; cat "$2" >&3 2>/dev/null; echo "@@dtk end $1" >&3; }
# kernel_log: the ring buffer's lines not sent yet, as one more chunk of the
# "dmesg" section. dmesg reads the buffer whatever the console loglevel, and
# nothing here ever clears it, so the host gets all of it.
LOGGED=0
kernel_log() {
    dmesg >/tmp/kmsg.out
    n=$(wc -l </tmp/kmsg.out)
    if [ "$n" -gt "$LOGGED" ]; then
        echo "@@dtk begin dmesg" >&3
        tail -n +$((LOGGED + 1)) /tmp/kmsg.out >&3
        echo "@@dtk end dmesg" >&3
    fi
    LOGGED=$n
}
# The result line must be complete before power-off: poweroff -f does not
# wait for the serial port to drain, so the channel is closed and synced first.
finish() {
    kernel_log
    say "exit $1 $STEP"
    exec 3>&-
    sync
    exec poweroff -f
}
# A step that ran nothing (no module loaded or removed) has nothing new to
# send: skipping it saves three busybox forks, ~30 ms under TCG. Nothing is
# lost, as the next capture sends every line not yet sent.
RAN=1
step() {
    [ -n "$RAN" ] && kernel_log
    RAN=
    STEP=$1
    read -r up _ </proc/uptime
    say "step $1 $up"
    echo "dtk: step $1" >/dev/kmsg
}
tainted() { cat /proc/sys/kernel/tainted; }

# run_limited NAME CMD...: CMD in the background, output in /tmp/NAME.out.
# A module init that never returns leaves modprobe in uninterruptible sleep,
# which no signal ends, so the shell polls and gives up instead of waiting.
run_limited() {
    name=$1; shift
    RAN=1
    "$@" >"/tmp/$name.out" 2>&1 &
    pid=$!
    read -r up _ </proc/uptime
    deadline=$(( ${up%.*} + DTK_STEP_TIMEOUT ))
    while :; do
        state=
        read -r _ _ state _ 2>/dev/null </proc/$pid/stat
        if [ -z "$state" ] || [ "$state" = Z ]; then break; fi
        read -r up _ </proc/uptime
        if [ "${up%.*}" -ge "$deadline" ]; then
            section "$name" "/tmp/$name.out"
            section stack /proc/$pid/stack
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
        say "kv taint $(tainted)"
        finish 20
    fi
}

STEP=setup
[ -r /dtk/config ] || finish 40
DTK_UNITS=
# shellcheck source=/dev/null
. /dtk/config
say "kv release $(uname -r)"
# What the kernel decided about signatures at boot: lockdown, and module.sig_enforce
# (Debian sets it under Secure Boot); on a firmware boot, the SecureBoot variable
# (4 attribute bytes, then 01 when on) and the keys the kernel's keyrings hold.
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
read -r lockdown 2>/dev/null </sys/kernel/security/lockdown && say "kv lockdown $lockdown"
read -r enforce 2>/dev/null </sys/module/module/parameters/sig_enforce && say "kv sig_enforce $enforce"
if [ -d /sys/firmware/efi ]; then
    $MODPROBE -q efivarfs 2>/dev/null
    mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>/dev/null
    say "kv secureboot $(od -An -tx1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c 2>&1)"
    grep -E ' asymmetri | keyring +\.(builtin_trusted_keys|secondary_trusted_keys|machine|platform):' /proc/keys >/tmp/keys.out 2>&1
    section keys /tmp/keys.out
fi
[ -z "$DTK_UNITS" ] && say "kv module $DTK_MODULE"
step boot
mkdir -p /host/lib && ln -s /lib/modules /host/lib/modules

# The node as KMM finds it: in-tree modules that the worker will remove are
# loaded, and so are the in-tree dependencies the user asked to preload.
step node
for m in $DTK_PRELOAD $DTK_NODE_LOADED; do
    run_limited node $MODPROBE -v "$m" || { section node /tmp/node.out; finish 40; }
done

step remove-in-tree
if [ -n "$DTK_REMOVE" ]; then
    # shellcheck disable=SC2086 # a list of module names, split on purpose
    run_limited remove $MODPROBE -rv $DTK_REMOVE
    section remove /tmp/remove.out
fi

if [ -n "$DTK_FIRMWARE_SRC" ]; then
    step firmware
    fwpath=/sys/module/firmware_class/parameters/path
    [ "$(cat $fwpath)" = "$DTK_FIRMWARE_HOST" ] || printf %s "$DTK_FIRMWARE_HOST" >$fwpath
    mkdir -p "$DTK_FIRMWARE_HOST"
    cp -R "$DTK_FIRMWARE_SRC"/. "$DTK_FIRMWARE_HOST"/
fi

# prove_module: load $DTK_MODULE as the worker does, verify it is live, run the
# check, unload it; returns the worker's exit status. A crash or a hung step
# ends the boot (finish), whatever module comes next.
prove_module() {
    step load
    eval "set -- $DTK_LOAD_ARGV"
    run_limited load $MODPROBE "$@"
    rc=$?
    section load /tmp/load.out
    crash_check
    [ $rc -ne 0 ] && return 10

    step verify
    live=no
    [ -d "/sys/module/$DTK_MODULE" ] && grep -q "^$DTK_MODULE .* Live " /proc/modules && live=yes
    say "kv live $live"
    say "kv taint $(tainted)"
    grep "^$DTK_MODULE " /proc/modules >/tmp/proc-modules.out
    section proc-modules /tmp/proc-modules.out
    [ $live != yes ] && return 11

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
    # KMM's unload pod has no softdep file (KMM f17d16d): one `modprobe -r` over
    # modulesLoadingOrder, each name on its own.
    rm -f /etc/modprobe.d/softdep.conf
    eval "set -- $DTK_UNLOAD_ARGV"
    run_limited unload $MODPROBE "$@"
    unload_rc=$?
    section unload /tmp/unload.out
    crash_check
    left=
    for name in ${DTK_UNLOADED:-$DTK_MODULE}; do
        [ -d "/sys/module/$name" ] && left="$left $name"
    done
    [ -n "$left" ] && say "kv left-loaded${left}"
    [ $check_rc -ne 0 ] && return 12
    [ $unload_rc -ne 0 ] || [ -n "$left" ] && return 13
    return 0
}

# One module (dtk vmtest), or many one after another (dtk prove): each begins
# with "module NAME" and ends with "done STATUS STEP"; the boot's own exit
# line follows the last. Each module's kernel lines are sent before its "done".
if [ -z "$DTK_UNITS" ]; then
    prove_module
    finish $?
fi
for unit in $DTK_UNITS; do
    eval "DTK_MODULE=\$DTK_MODULE_$unit DTK_CHECK=\$DTK_CHECK_$unit"
    DTK_UNLOADED=
    eval "DTK_LOAD_ARGV=\$DTK_LOAD_ARGV_$unit DTK_UNLOAD_ARGV=\$DTK_UNLOAD_ARGV_$unit"
    eval "say \"module \$DTK_NAME_$unit\""
    say "kv module $DTK_MODULE"
    say "kv taint-before $(tainted)"
    prove_module
    code=$?
    kernel_log
    say "done $code $STEP"
done
STEP=end
finish 0
