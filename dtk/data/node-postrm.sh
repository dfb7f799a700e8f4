#!/bin/sh
# dtk node's kernel hook (/etc/kernel/postrm.d/dtk-node): the kernel $1 is
# being removed, so is what dtk prepared for it. Never fails the removal.
version="$1"
[ -n "$version" ] || exit 0
command -v dtk >/dev/null 2>&1 || exit 0
dtk node clean --kernel "$version" || true
exit 0
