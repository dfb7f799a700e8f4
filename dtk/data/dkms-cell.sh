#!/bin/bash
# dtk: one DKMS cell, run inside the kernel's toolkit (see dtk/driver/dkmscell.py).
# Arguments: OUT KERNEL JOBS NAME/VERSION...  Exit: 0 built, dkms's status on failure,
# 90 a broken dkms.conf; dkms-eval.sh exits 3 for a package BUILD_EXCLUSIVE leaves out.
# JOBS is make's -j, the cores this cell may use (dtk.driver.matrix.make_jobs says why).
out=$1; K=$2; jobs=$3; shift 3
arch=$(uname -m)
mkdir -p /etc/dkms/framework.conf.d
echo 'sign_file=/dtk-signing-is-a-separate-step' > /etc/dkms/framework.conf.d/zz-dtk.conf
dest="$out"/opt/lib/modules/$K/updates/dkms
mkdir -p "$dest"
for nv in "$@"; do
  n=${nv%%/*}; v=${nv#*/}
  bash "$out"/eval.sh "$out"/"$n".records /usr/src/"$n-$v"/dkms.conf "$K" "$arch" \
    /lib/modules/"$K"/build "$n" "$v"
  case $? in
    0) ;;
    3) echo "dtk: BUILD_EXCLUSIVE leaves $n out for $K"; continue ;;
    *) echo "dtk: the dkms.conf of $n is broken"; exit 90 ;;
  esac
  dkms build -j "$jobs" -m "$n" -v "$v" -k "$K"
  rc=$?
  if [ $rc -ne 0 ]; then
    log=/var/lib/dkms/$n/$v/build/make.log
    [ -f "$log" ] && { echo "---- $log (last lines)"; tail -n 60 "$log"; }
    echo "dtk: 'dkms build -j $jobs -m $n -v $v -k $K' exited with status $rc"
    exit $rc
  fi
  cat "/var/lib/dkms/$n/$v/$K/$arch/log/make.log" 2>/dev/null
  cp -a "/var/lib/dkms/$n/$v/$K/$arch/module/." "$dest"/
done
# KMM's pattern for in-tree dependencies: its worker mounts the node's /lib/modules
# at /host/lib/modules, and this 'host' link lets `modprobe -d /opt` reach them. Here
# the toolkit's tree of the same kernel stands in for the node's, so depmod records
# them in modules.dep (a dangling link would make depmod fail, KMM midstream #1036).
# Only modules that name another module (depends= or softdep=) the image does not
# ship need it, and depmod is shown only what modprobe can reach from them: K's
# modules.dep closure of those names, with every softdep (by name or alias) on the
# way (indexing K's whole tree cost 0.65 s a cell and 5 MB an image).
own=" "
for ko in "$dest"/*.ko*; do
  [ -e "$ko" ] || continue
  b=${ko##*/}; b=${b%%.ko*}; own="$own${b//-/_} "
done
wanted=
for ko in "$dest"/*.ko*; do
  [ -e "$ko" ] || continue
  for m in $(modinfo -F depends "$ko" | tr , ' ') $(modinfo -F softdep "$ko"); do
    case $m in pre:|post:) continue ;; esac
    case $own in *" ${m//-/_} "*) ;; *) wanted="$wanted $m" ;; esac
  done
done
moddir="$out"/opt/lib/modules/"$K"
if [ -n "$wanted" ]; then
  kdir=/lib/modules/$K
  reach=$(mktemp -d)
  awk -v want="$wanted" '
    function norm(n) { sub(/.*\//, "", n); sub(/\.ko.*/, "", n); gsub(/-/, "_", n); return n }
    FILENAME ~ /modules\.dep$/ {
      p = $1; sub(/:$/, "", p); m = norm(p); path[m] = p
      for (i = 2; i <= NF; i++) next_of[m] = next_of[m] " " $i
      next
    }
    FILENAME ~ /modules\.softdep$/ && $1 == "softdep" {
      m = norm($2)
      for (i = 3; i <= NF; i++) if ($i != "pre:" && $i != "post:") next_of[m] = next_of[m] " " $i
      next
    }
    FILENAME ~ /modules\.alias$/ && $1 == "alias" { alias[$2] = alias[$2] " " $3; next }
    END {
      n = split(want, queue, " ")
      for (q = 1; q <= n; q++) {
        name = queue[q]; m = norm(name)
        if (m in path) {
          if (seen[m]++) continue
          print path[m]
          k = split(next_of[m], more, " ")
        } else if ((name in alias) && !aliased[name]++) {
          k = split(alias[name], more, " ")
        } else {
          continue  # built into the kernel, or nowhere: modprobe skips it too
        }
        for (j = 1; j <= k; j++) queue[++n] = more[j]
      }
    }' "$kdir/modules.dep" "$kdir/modules.softdep" "$kdir/modules.alias" |
  while read -r rel; do
    mkdir -p "$reach/${rel%/*}" && ln -s "$kdir/$rel" "$reach/$rel"
  done
  ln -sfn "$reach" "$moddir"/host
  depmod -b "$out"/opt "$K"
  ln -sfn /host/lib/modules/"$K" "$moddir"/host
else
  depmod -b "$out"/opt "$K"
fi
