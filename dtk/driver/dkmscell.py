"""The shell a DKMS cell runs inside its toolkit. Its text is part of every DKMS
cell's input hash (see plan.cell_hash), so changing it rebuilds those images."""

from __future__ import annotations

from dtk.driver import dkmsconf

OUT = "/dtk-out"
# Where `dkms install` puts modules on Debian (dkms's override_dest_module_location).
DEST = "updates/dkms"
EXCLUDED_STATUS = 77  # dkms's own exit status for a BUILD_EXCLUSIVE mismatch
_BROKEN_STATUS = 90  # not one dkms uses

# One `buildah run` per cell (each costs ~0.6 s): evaluate every dkms.conf for
# this kernel, skip excluded packages, stop at a broken one, build the rest
# with dkms in BUILD_DEPENDS order, then run depmod on what was built.
# Signing is dtk's own later step, with a key that never enters an image;
# left alone, dkms would make a throwaway MOK key and sign with it.
CELL_SCRIPT = f"""
K=$1; shift
arch=$(uname -m)
mkdir -p /etc/dkms/framework.conf.d
echo 'sign_file=/dtk-signing-is-a-separate-step' > /etc/dkms/framework.conf.d/zz-dtk.conf
dest={OUT}/opt/lib/modules/$K/{DEST}
mkdir -p "$dest"
for nv in "$@"; do
  n=${{nv%%/*}}; v=${{nv#*/}}
  bash {OUT}/eval.sh {OUT}/"$n".records /usr/src/"$n-$v"/dkms.conf "$K" "$arch" \\
    /lib/modules/"$K"/build "$n" "$v"
  case $? in
    0) ;;
    {dkmsconf.EVAL_EXCLUDED}) echo "dtk: BUILD_EXCLUSIVE leaves $n out for $K"; continue ;;
    *) echo "dtk: the dkms.conf of $n is broken"; exit {_BROKEN_STATUS} ;;
  esac
  dkms build -m "$n" -v "$v" -k "$K"
  rc=$?
  if [ $rc -ne 0 ]; then
    log=/var/lib/dkms/$n/$v/build/make.log
    [ -f "$log" ] && {{ echo "---- $log (last lines)"; tail -n 60 "$log"; }}
    echo "dtk: 'dkms build -m $n -v $v -k $K' exited with status $rc"
    exit $rc
  fi
  cat /var/lib/dkms/$n/$v/$K/$arch/log/make.log 2>/dev/null
  cp -a /var/lib/dkms/$n/$v/$K/$arch/module/. "$dest"/
done
# KMM's pattern for in-tree dependencies: its worker mounts the node's /lib/modules
# at /host/lib/modules, and this 'host' link lets `modprobe -d /opt` reach them. Here
# the toolkit's tree of the same kernel stands in for the node's, so depmod records
# them in modules.dep (a dangling link would make depmod fail, KMM midstream #1036).
mkdir -p /host/lib/modules && ln -sfn /lib/modules/"$K" /host/lib/modules/"$K"
ln -sfn /host/lib/modules/"$K" {OUT}/opt/lib/modules/"$K"/host
depmod -b {OUT}/opt "$K"
"""

