"""dkms.conf, evaluated the way dkms evaluates it.

dkms.conf is a bash fragment, so it is sourced by bash — never parsed with a
regex — with the variables dkms sets (`kernelver`, `arch`, `kernel_source_dir`,
`dkms_tree`, `source_tree`, …). The derived decisions dkms makes from it
(BUILD_EXCLUSIVE_*, record validation with dkms's defaults) are made in the same bash process,
so regular expressions have bash's `=~` semantics exactly as in dkms's
`read_conf`. It runs only inside a kernel's toolkit (for planning, with no
network; per kernel, where `.config` is real): a dkms.conf is someone else's
code, never run on the host.

BUILD_EXCLUSIVE_KERNEL_MIN/_MAX are newer than Debian 12's dkms 3.0.10; they are
compared with `sort -V` on the whole release, which is how dkms ≥ 3.1 reads them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dtk import scripts

# Arguments: OUT CONF KERNELVER ARCH KERNEL_SOURCE_DIR MODULE MODULE_VERSION.
# Records go to OUT as NUL-separated (name, index, value) triples; the
# fragment's own stdout is discarded and its stderr is left to the caller's log.
# Exit status: 0 buildable, 3 excluded for this kernel, 4 broken (see the records).
EVAL_EXCLUDED = 3
EVAL_BROKEN = 4
def eval_script() -> str:
    """dtk/data/dkms-eval.sh (checked by shellcheck)."""
    return scripts.text("dkms-eval.sh")


@dataclass(frozen=True)
class DkmsConf:
    """What dtk decides from a dkms.conf for one kernel and architecture: its name and
    version, what it builds with (BUILD_DEPENDS), whether BUILD_EXCLUSIVE leaves this
    kernel out, and dkms's own errors. dkms itself applies the rest when it builds."""

    package_name: str
    package_version: str
    build_depends: tuple[str, ...]
    exclusions: tuple[str, ...]
    errors: tuple[str, ...]

    @property
    def excluded(self) -> bool:
        return bool(self.exclusions)


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

    errors = list(many("error"))
    if one("sourced") not in ("", "0") and errors:
        errors.insert(0, f"dkms.conf: sourcing it with bash failed (status {one('sourced')})")
    return DkmsConf(
        package_name=one("PACKAGE_NAME"), package_version=one("PACKAGE_VERSION"),
        build_depends=tuple(" ".join(many("BUILD_DEPENDS")).split()),
        exclusions=many("exclude"), errors=tuple(errors))
