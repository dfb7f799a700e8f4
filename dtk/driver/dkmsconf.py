"""dkms.conf, evaluated the way dkms evaluates it.

dkms.conf is a bash fragment, so it is sourced by bash — never parsed with a
regex — with the variables dkms sets (`kernelver`, `arch`, `kernel_source_dir`,
`dkms_tree`, `source_tree`, …). The derived decisions dkms makes from it
(make command per MAKE_MATCH, patches per PATCH_MATCH, BUILD_EXCLUSIVE_*,
record validation, default module names) are made in the same bash process,
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
