#!/bin/sh
# dtk node's kernel hook (/etc/kernel/postrm.d/dtk-node): the kernel $1 is
# being removed, so is what dtk prepared for it. Never fails the removal,
# never silent about a failure, nothing on stdout or from stdin (the Debian
# Kernel Handbook's rules for hooks, as in dtk-node's postinst hook).
exec </dev/null >&2

dtk() { /usr/bin/dtk "$@"; }  # `dtk node install-hooks` puts the dtk it ran as here
say() { echo "dtk-node: $*"; }

version="$1"
case "$version" in
    "" | *[!A-Za-z0-9._+~-]* | *..*)
        say "ignored: '$version' is not a kernel release"
        exit 0 ;;
esac
# The kernel package's postrm runs the hooks when it is upgraded in place too
# (same release, new build): what was prepared for that release stays then.
eval set -- "${DEB_MAINT_PARAMS:-remove}"
case "$1" in
    remove | purge) ;;
    *) exit 0 ;;
esac
# Nothing prepared for it: nothing to forget (quiet even where dtk was removed).
[ -e "${DTK_NODE_ROOT:-}/var/lib/dtk/kernels/$version" ] || exit 0

export DTK_CACHE_DIR="${DTK_CACHE_DIR:-/var/cache/dtk}"
export DTK_STATE_DIR="${DTK_STATE_DIR:-/var/log/dtk}"
dtk node clean --kernel "$version"
status=$?
if [ "$status" -ne 0 ]; then
    say "could not forget what was prepared for $version (exit $status, see above);" \
        "dtk node clean --kernel $version removes it"
fi
exit 0
