#!/bin/sh
# dtk node's kernel hook (/etc/kernel/postinst.d/dtk-node), run by the
# linux-image package's postinst with the new kernel's release as $1: fetch,
# unpack and check every declared driver image for it, one line per module.
#
# The Debian Kernel Handbook's rules for hooks: they may run under debconf, so
# stdin is closed and every line goes to stderr; and it never fails the
# installation (a kernel package whose hook fails leaves the machine
# half-upgraded). Nor is it ever silent: when dtk cannot run or cannot prepare,
# apt's output says so. `dtk node status --kernel K` says what is not ready.
exec </dev/null >&2

dtk() { /usr/bin/dtk "$@"; }  # `dtk node install-hooks` puts the dtk it ran as here
say() { echo "dtk-node: $*"; }

version="$1"
case "$version" in
    "" | *[!A-Za-z0-9._+~-]* | *..*)
        say "ignored: '$version' is not a kernel release"
        exit 0 ;;
esac
# Nothing declared, nothing to prepare: quiet even where dtk was removed (its
# conffiles, this hook among them, stay until it is purged).
set -- "${DTK_NODE_ROOT:-}"/etc/dtk/modules/*.yaml
[ -e "$1" ] || exit 0

# What the boot unit uses, so that nothing lands in root's home directory.
export DTK_CACHE_DIR="${DTK_CACHE_DIR:-/var/cache/dtk}"
export DTK_STATE_DIR="${DTK_STATE_DIR:-/var/log/dtk}"
dtk node prepare --kernel "$version"
status=$?
case $status in
    0) ;;
    126 | 127)
        say "cannot run dtk (exit $status): the drivers declared in /etc/dtk/modules" \
            "were NOT prepared for $version and will not load after a reboot into it;" \
            "reinstall dtk, or 'apt purge dtk' to drop the declarations" ;;
    *)
        say "could not prepare the drivers for $version (exit $status, see above);" \
            "dtk node status --kernel $version" ;;
esac
exit 0
