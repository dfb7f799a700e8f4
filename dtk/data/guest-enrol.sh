#!/bin/busybox sh
# shellcheck shell=sh
# dtk VM init for enrolling a MOK the way a user does on a Secure Boot machine: import
# the certificates with mokutil (a password hash, never the password, on its command
# line), then power off; shim's MokManager completes it on the next boot. Results go
# to /dev/ttyS1 in guest-init.sh's line protocol.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/usr/libexec/kmod:/sbin:/usr/sbin:/bin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo /usr/libexec/kmod/modprobe >/proc/sys/kernel/modprobe
exec 3>/dev/ttyS1
echo >&3  # the firmware writes to this port too: end its last line before ours
say() { echo "@@dtk $*" >&3; }
section() { echo "@@dtk begin $1" >&3; cat "$2" >&3 2>/dev/null; echo "@@dtk end $1" >&3; }
finish() {
    say "exit $1 $2"
    exec 3>&-
    sync
    exec poweroff -f
}
say "kv release $(uname -r)"
# mokutil writes MokNew and MokAuth as EFI variables: efivarfs, a module on Debian
/usr/libexec/kmod/modprobe efivarfs >/tmp/efivarfs.out 2>&1
mount -t efivarfs efivarfs /sys/firmware/efi/efivars 2>>/tmp/efivarfs.out ||
    { section efivarfs /tmp/efivarfs.out; finish 40 efivarfs; }
say "kv secureboot $(od -An -tx1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c 2>&1)"
# shellcheck disable=SC2046 # one word per certificate file
mokutil --import $(ls /dtk/enrol/*.der) --hash-file /dtk/enrol/password.hash >/tmp/import.out 2>&1
rc=$?
section import /tmp/import.out
mokutil --list-new >/tmp/new.out 2>&1
section list-new /tmp/new.out
finish "$rc" import
