#!/bin/bash
# dtk: evaluate mounted dkms.conf files for planning (name, version, BUILD_DEPENDS),
# inside a toolkit container with no network: a dkms.conf is a bash fragment from
# someone else, so it never runs on the host (see dtk/driver/dkms.py).
# Arguments: OUT KERNEL COUNT; tree i is mounted at /usr/src/dtk-eval/i.
out=$1; K=$2; n=$3
for ((i = 0; i < n; i++)); do
  bash "$out/eval.sh" "$out/$i.records" "/usr/src/dtk-eval/$i/dkms.conf" "$K" \
    "$(uname -m)" /nonexistent "" "" 2>"$out/$i.stderr"
  echo "$?" >"$out/$i.status"
done
