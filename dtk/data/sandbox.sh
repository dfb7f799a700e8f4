#!/bin/sh
# dtk: run a build in a throwaway root over an image (see dtk/engine/sandbox.py).
# Runs in a mount namespace of its own (`unshare --mount --propagation private`):
# every mount made here goes away with the build's last process.
# Arguments: LOWER DIR FILTER BWRAP-ARGUMENTS...
#   LOWER  the image's root, mounted read-only by dtk (never written: overlayfs)
#   DIR    an empty directory for the build's writes
#   FILTER the seccomp program bwrap loads (read on descriptor 9)
set -eu
lower=$1 dir=$2 filter=$3
shift 3
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
exec bwrap --bind "$dir/root" / "$@" 9<"$filter"
