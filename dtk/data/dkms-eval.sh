#!/bin/bash
# dtk: dkms.conf evaluated the way dkms's read_conf evaluates it (see dtk/driver/dkmsconf.py).
# shellcheck disable=SC1090,SC2034,SC2154
__dtk_out=$1; __dtk_conf=$2
kernelver=$3; arch=$4; kernel_source_dir=$5; module=$6; module_version=$7
dkms_tree=/var/lib/dkms; source_tree=/usr/src; install_tree=/lib/modules
kernel_config="$kernel_source_dir/.config"
exec 3>"$__dtk_out"
__dtk_status=0
__dtk_emit() {
  printf '%s\0%s\0%s\0' "$1" "$2" "$3" >&3
  case $1 in error) __dtk_status=4 ;; exclude) ((__dtk_status)) || __dtk_status=3 ;; esac
}
__dtk_vars="PACKAGE_NAME PACKAGE_VERSION BUILT_MODULE_NAME BUILT_MODULE_LOCATION
  DEST_MODULE_NAME DEST_MODULE_LOCATION STRIP MAKE MAKE_MATCH CLEAN PATCH PATCH_MATCH
  PRE_BUILD POST_BUILD BUILD_DEPENDS BUILD_EXCLUSIVE_KERNEL BUILD_EXCLUSIVE_KERNEL_MIN
  BUILD_EXCLUSIVE_KERNEL_MAX BUILD_EXCLUSIVE_ARCH BUILD_EXCLUSIVE_CONFIG AUTOINSTALL"
# shellcheck disable=SC2086 # the list of dkms.conf variables, split on purpose
unset $__dtk_vars
if [[ ! -r $__dtk_conf ]]; then
  __dtk_emit error 0 "Could not locate dkms.conf file. File: $__dtk_conf does not exist."
  exit 4
fi
. "$__dtk_conf" >/dev/null
__dtk_emit sourced 0 "$?"
[[ $module ]] || module=$PACKAGE_NAME
[[ $module_version ]] || module_version=$PACKAGE_VERSION
for __dtk_v in $__dtk_vars; do
  declare -n __dtk_ref=$__dtk_v
  for __dtk_i in "${!__dtk_ref[@]}"; do __dtk_emit "$__dtk_v" "$__dtk_i" "${__dtk_ref[$__dtk_i]}"; done
  unset -n __dtk_ref
done

# Records, defaults and validation, as dkms's read_conf does them.
__dtk_n=0
for __dtk_s in ${#BUILT_MODULE_NAME[@]} ${#BUILT_MODULE_LOCATION[@]} \
    ${#DEST_MODULE_NAME[@]} ${#DEST_MODULE_LOCATION[@]}; do
  ((__dtk_s > __dtk_n)) && __dtk_n=$__dtk_s
done
for ((i = 0; i < __dtk_n; i++)); do
  b=${BUILT_MODULE_NAME[$i]}; d=${DEST_MODULE_NAME[$i]}
  [[ ! $b ]] && ((${#DEST_MODULE_LOCATION[@]} == 1)) && b=$PACKAGE_NAME
  [[ ! $d ]] && d=$b
  [[ ! $b ]] && __dtk_emit error 0 "dkms.conf: Error! No 'BUILT_MODULE_NAME' directive specified for record #$i."
  case $b in *.o|*.ko) __dtk_emit error 0 "dkms.conf: Error! 'BUILT_MODULE_NAME' directive ends in '.o' or '.ko' in record #$i." ;; esac
  case $d in *.o|*.ko) __dtk_emit error 0 "dkms.conf: Error! 'DEST_MODULE_NAME' directive ends in '.o' or '.ko' in record #$i." ;; esac
  case ${DEST_MODULE_LOCATION[$i]} in
    /kernel*|/updates*|/extra*) ;;
    '') __dtk_emit error 0 "dkms.conf: Error! No 'DEST_MODULE_LOCATION' directive specified for record #$i." ;;
    *) __dtk_emit error 0 "dkms.conf: Error! Directive 'DEST_MODULE_LOCATION' does not begin with '/kernel', '/updates', or '/extra' in record #$i." ;;
  esac
done
((${#DEST_MODULE_LOCATION[@]} == 0)) && __dtk_emit error 0 "dkms.conf: Error! No 'DEST_MODULE_LOCATION' directive specified."
[[ $PACKAGE_NAME ]] || __dtk_emit error 0 "dkms.conf: Error! No 'PACKAGE_NAME' directive specified."
[[ $PACKAGE_VERSION ]] || __dtk_emit error 0 "dkms.conf: Error! No 'PACKAGE_VERSION' directive specified."

# BUILD_EXCLUSIVE_*: each reason a kernel is left out, in dkms's terms.
K=$BUILD_EXCLUSIVE_KERNEL
[[ $K && ! $kernelver =~ $K ]] && __dtk_emit exclude 0 "BUILD_EXCLUSIVE_KERNEL=\"$K\" does not match kernel $kernelver"
K=$BUILD_EXCLUSIVE_KERNEL_MIN
[[ $K ]] && ! printf '%s\n%s\n' "$K" "$kernelver" | sort -V -C && __dtk_emit exclude 0 "kernel $kernelver is older than BUILD_EXCLUSIVE_KERNEL_MIN=\"$K\""
K=$BUILD_EXCLUSIVE_KERNEL_MAX
[[ $K ]] && ! printf '%s\n%s\n' "$kernelver" "$K" | sort -V -C && __dtk_emit exclude 0 "kernel $kernelver is newer than BUILD_EXCLUSIVE_KERNEL_MAX=\"$K\""
K=$BUILD_EXCLUSIVE_ARCH
[[ $K && ! $arch =~ $K ]] && __dtk_emit exclude 0 "BUILD_EXCLUSIVE_ARCH=\"$K\" does not match architecture $arch"
if [[ $BUILD_EXCLUSIVE_CONFIG && -e $kernel_config ]]; then
  for kconf in $BUILD_EXCLUSIVE_CONFIG; do
    case $kconf in
      !*) grep -q -E "^${kconf#!}=[ym]" "$kernel_config" && __dtk_emit exclude 0 "BUILD_EXCLUSIVE_CONFIG: ${kconf#!} is set in the kernel's .config" ;;
      *) grep -q -E "^${kconf}=[ym]" "$kernel_config" || __dtk_emit exclude 0 "BUILD_EXCLUSIVE_CONFIG: $kconf is not set in the kernel's .config" ;;
    esac
  done
fi
exit $__dtk_status
