#!/bin/sh
# dtk: run a build in a throwaway root over an image (see dtk/engine/sandbox.py).
# Runs in mount and network namespaces of its own (`unshare --mount --propagation
# private --net`): every mount made here goes away with the build's last process.
# Arguments: LOWER DIR BWRAP-ARGUMENTS...
#   LOWER  the image's root, mounted read-only by dtk (never written: overlayfs)
#   DIR    an empty directory for the build's writes
set -eu
lower=$1 dir=$2
shift 2
layers() {
  mkdir "$dir/upper" "$dir/work" "$dir/root"
  mount -t overlay dtk-sandbox \
    -o "lowerdir=$lower,upperdir=$dir/upper,workdir=$dir/work" "$dir/root"
}
if ! layers 2>/dev/null; then
  # DIR's file system cannot hold an overlay's writes (it is an overlay itself, as
  # inside a container): the build writes to memory instead.
  mount -t tmpfs -o mode=700 dtk-sandbox "$dir"
  layers
fi
# A sysfs of this network namespace's own, read-only, with nothing mounted on it: not
# the host's /sys, which carries cgroups, debugfs, tracefs, securityfs, bpffs and
# efivarfs, and shows the host's network devices.
mkdir "$dir/sys"
mount -t sysfs -o ro,nosuid,nodev,noexec dtk-sandbox "$dir/sys"
exec bwrap --bind "$dir/root" / --ro-bind "$dir/sys" /sys "$@"
