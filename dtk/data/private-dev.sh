#!/bin/sh
# dtk: run "$@" (a `buildah run` of someone else's code) in a private mount namespace
# (`unshare --mount --propagation private`) whose /dev holds only what a build uses.
# buildah's chroot isolation binds the caller's /dev into the container: the host's
# disks, loop and swap (zram) devices included, which root in the container could read.
set -eu
mount -t tmpfs -o mode=755,nosuid dtk-dev /dev
for spec in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
  name=${spec%%:*}; numbers=${spec#*:}
  mknod -m 666 "/dev/$name" c "${numbers%:*}" "${numbers#*:}"
done
ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin
ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
mkdir /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
ln -s pts/ptmx /dev/ptmx
mount -t tmpfs -o nosuid,nodev dtk-shm /dev/shm
exec "$@"
