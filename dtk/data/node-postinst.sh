#!/bin/sh
# dtk node's kernel hook (/etc/kernel/postinst.d/dtk-node), run by the
# linux-image package's postinst with the new kernel's release as $1: fetch,
# unpack and check every declared driver image for it, one line per module.
# It never fails the installation: a kernel package whose hook aborts leaves
# the machine half-upgraded. `dtk node status --kernel K` says what is not ready.
version="$1"
[ -n "$version" ] || exit 0
command -v dtk >/dev/null 2>&1 || exit 0
if ! dtk node prepare --kernel "$version"; then
    echo "dtk node: could not prepare drivers for $version (dtk node status --kernel $version)" >&2
fi
exit 0
