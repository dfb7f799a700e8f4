# ruff: noqa: E501
# (the embedded bash keeps each of dkms's messages on one greppable line)
"""dkms.conf, evaluated the way dkms evaluates it.

dkms.conf is a bash fragment, so it is sourced by bash — never parsed with a
regex — with the variables dkms sets (`kernelver`, `arch`, `kernel_source_dir`,
`dkms_tree`, `source_tree`, …). The derived decisions dkms makes from it
(make command per MAKE_MATCH, patches per PATCH_MATCH, BUILD_EXCLUSIVE_*,
record validation, default module names) are made in the same bash process,
so regular expressions have bash's `=~` semantics exactly as in dkms's
`read_conf`. The same script runs on the host (planning, unit tests) and
inside a kernel's toolkit (per kernel, where `.config` is real).

BUILD_EXCLUSIVE_KERNEL_MIN/_MAX are newer than Debian 12's dkms 3.0.10; they are
compared with `sort -V` on the whole release, which is how dkms ≥ 3.1 reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dtk import run as runner
from dtk.errors import DtkError

# Arguments: OUT CONF KERNELVER ARCH KERNEL_SOURCE_DIR MODULE MODULE_VERSION.
# Records go to OUT as NUL-separated (name, index, value) triples; the
# fragment's own stdout is discarded and its stderr is left to the caller's log.
# Exit status: 0 buildable, 3 excluded for this kernel, 4 broken (see the records).
EVAL_EXCLUDED = 3
EVAL_BROKEN = 4
EVAL_SCRIPT = r"""
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
  b=${BUILT_MODULE_NAME[$i]}; d=${DEST_MODULE_NAME[$i]}; loc=${BUILT_MODULE_LOCATION[$i]}
  [[ ! $b ]] && ((${#DEST_MODULE_LOCATION[@]} == 1)) && b=$PACKAGE_NAME
  [[ ! $d ]] && d=$b
  [[ $loc && ${loc:(-1)} != / ]] && loc="$loc/"
  case ${STRIP[$i]} in [nN]*) s=no ;; [yY]*) s=yes ;; *) s=${STRIP[0]:-yes} ;; esac
  [[ $s == [nN]* ]] && s=no
  [[ $s == [yY]* ]] && s=yes
  __dtk_emit module "$i" "$b"$'\t'"$loc"$'\t'"$d"$'\t'"${DEST_MODULE_LOCATION[$i]}"$'\t'"$s"
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

# The make command for this kernel (MAKE_MATCH) and its patches (PATCH_MATCH).
make_command=
[[ ${MAKE_MATCH[0]} ]] || make_command=${MAKE[0]}
for ((i = 0; i < ${#MAKE[@]}; i++)); do
  [[ ${MAKE[$i]} && ${MAKE_MATCH[$i]} && $kernelver =~ ${MAKE_MATCH[$i]} ]] && make_command=${MAKE[$i]}
done
[[ $make_command ]] || make_command="make -C $kernel_source_dir M=$dkms_tree/$module/$module_version/build"
__dtk_emit make_command 0 "$make_command"
for ((i = 0; i < ${#PATCH[@]}; i++)); do
  [[ ${PATCH[$i]} && (! ${PATCH_MATCH[$i]} || $kernelver =~ ${PATCH_MATCH[$i]}) ]] && __dtk_emit patch "$i" "${PATCH[$i]}"
done

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
"""


@dataclass(frozen=True)
class DkmsModule:
    """One BUILT_MODULE_NAME record, with dkms's defaults applied."""

    built_name: str
    built_location: str
    dest_name: str
    dest_location: str
    strip: bool


@dataclass(frozen=True)
class DkmsConf:
    """A dkms.conf as dkms sees it for one kernel and architecture."""

    package_name: str
    package_version: str
    modules: tuple[DkmsModule, ...]
    make_command: str
    clean: str
    patches: tuple[str, ...]
    pre_build: str
    post_build: str
    build_depends: tuple[str, ...]
    exclusions: tuple[str, ...]
    errors: tuple[str, ...]
    variables: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def excluded(self) -> bool:
        return bool(self.exclusions)

    def value(self, name: str) -> tuple[str, ...]:
        return dict(self.variables).get(name, ())


def parse_records(data: bytes) -> DkmsConf:
    """Turn the script's NUL-separated (name, index, value) triples into a DkmsConf."""
    fields = data.decode("utf-8", errors="replace").split("\0")
    if fields and fields[-1] == "":
        fields.pop()
    if len(fields) % 3:
        raise ValueError("truncated dkms.conf evaluation output")
    arrays: dict[str, dict[int, str]] = {}
    for i in range(0, len(fields), 3):
        name, index, value = fields[i], int(fields[i + 1]), fields[i + 2]
        arrays.setdefault(name, {})[index] = value

    def many(name: str) -> tuple[str, ...]:
        found = arrays.get(name, {})
        return tuple(found[k] for k in sorted(found))

    def one(name: str) -> str:
        return next(iter(many(name)), "")

    modules = tuple(DkmsModule(b, loc, d, dest, s == "yes")
                    for b, loc, d, dest, s in (m.split("\t") for m in many("module")))
    errors = list(many("error"))
    if one("sourced") not in ("", "0") and errors:
        errors.insert(0, f"dkms.conf: sourcing it with bash failed (status {one('sourced')})")
    upper = {k: many(k) for k in arrays if k.isupper()}
    return DkmsConf(
        package_name=one("PACKAGE_NAME"), package_version=one("PACKAGE_VERSION"),
        modules=modules, make_command=one("make_command"),
        clean=one("CLEAN") or "make clean", patches=many("patch"),
        pre_build=one("PRE_BUILD"), post_build=one("POST_BUILD"),
        build_depends=tuple(" ".join(many("BUILD_DEPENDS")).split()),
        exclusions=many("exclude"), errors=tuple(errors),
        variables=tuple(sorted(upper.items())),
    )


def evaluate_on_host(conf: Path, kernelver: str, *, arch: str, kernel_source_dir: str,
                     work: Path, module: str = "", module_version: str = "") -> DkmsConf:
    """Source `conf` with the host's bash (planning and tests: no kernel tree needed)."""
    out = work / "dkmsconf.records"
    result = runner.run(["bash", "-c", EVAL_SCRIPT, "dtk-dkms-eval", str(out),
                         str(conf.absolute()), kernelver, arch, kernel_source_dir, module,
                         module_version], check=False, timeout=120)
    if result.returncode not in (0, EVAL_EXCLUDED, EVAL_BROKEN) or not out.exists():
        raise DtkError(f"evaluating {conf} with bash failed",
                       hint=result.stderr.strip()[-500:] or None)
    return parse_records(out.read_bytes())
