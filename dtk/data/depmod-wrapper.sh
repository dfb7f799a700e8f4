#!/bin/sh
# depmod in dtk's driver-image base (DTK_BASE): kmod's real depmod, which writes
# the binary indexes (modules.dep.bin) that kmod's `modprobe -d /opt` reads —
# busybox's depmod writes only the text modules.dep, which kmod ignores.
#
# KMM's docs and CI Dockerfiles run `depmod -b /opt` in the final stage, often
# without a kernel version. depmod then indexes `uname -r`: in a KMM build pod
# that is the node's kernel (the one built for), but in a container build it is
# the build host's. So when no version is named and BASE/lib/modules holds
# exactly one kernel directory, that kernel is indexed; with several, the
# KERNEL_FULL_VERSION build arg picks one if it names one of them.
set -eu
real=/usr/libexec/dtk/depmod
base=""
named=""
expect=""
for arg in "$@"; do
    if [ -n "$expect" ]; then
        [ "$expect" = base ] && base="$arg"
        expect=""
        continue
    fi
    case "$arg" in
        -b|--basedir) expect=base ;;
        -C|--config|-E|--symvers|-F|--filesyms|-P|--symbol-prefix|-o|--outdir) expect=skip ;;
        -b?*) base="${arg#-b}" ;;
        --basedir=*) base="${arg#--basedir=}" ;;
        -*) ;;
        [0-9]*.*) named="$arg"; break ;;
        *) exec "$real" "$@" ;;  # module files without a version: as given
    esac
done
if [ -n "$named" ]; then
    exec "$real" "$@"
fi
count=0
only=""
for dir in "$base"/lib/modules/*/; do
    [ -d "$dir" ] || continue
    count=$((count + 1))
    only="$(basename "$dir")"
done
version=""
if [ "$count" -eq 1 ]; then
    version="$only"
elif [ "$count" -gt 1 ] && [ -n "${KERNEL_FULL_VERSION:-}" ] \
        && [ -d "$base/lib/modules/$KERNEL_FULL_VERSION" ]; then
    version="$KERNEL_FULL_VERSION"
elif [ "$count" -gt 1 ]; then
    echo "depmod: several kernels under $base/lib/modules; name one: depmod -b ${base:-/} VERSION" >&2
    exit 1
fi
if [ -z "$version" ]; then
    exec "$real" "$@"
fi
echo "depmod (dtk): no kernel version given; indexing $version from ${base:-}/lib/modules" >&2
# The version goes after the options: depmod takes [options] [version] [modules…].
exec "$real" "$@" "$version"
