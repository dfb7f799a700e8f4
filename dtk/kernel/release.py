"""Kernel release strings, as `uname -r` prints them, and KMM's variables.

Pure: no I/O. Two families are understood:

* Debian: ``6.1.0-56-amd64``, ``6.1.0-56-rt-amd64``, ``6.12.117+deb12-cloud-amd64``
  (``<upstream>-<abi>-<flavour>`` or ``<upstream>+deb<N>-<flavour>``);
* RHEL: ``5.14.0-427.18.1.el9_4.x86_64``, with ``+rt``/``+64k``/``+debug`` variants
  (since 9.4) or the older ``….rt14.296.el9_2.x86_64`` real-time form.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from dtk.errors import DtkError
from dtk.kernel.envsubst import envsubst


class Family(enum.StrEnum):
    DEBIAN = "debian"
    RHEL = "rhel"


class Flavour(enum.StrEnum):
    """The kernel's build variant; what KMM users select nodes by."""

    STANDARD = "standard"
    RT = "rt"
    CLOUD = "cloud"
    K64 = "64k"
    DEBUG = "debug"
    OTHER = "other"


_DEBIAN = re.compile(
    r"^(?P<x>\d+)\.(?P<y>\d+)\.(?P<z>\d+)"
    r"(?P<abi>-\d+|\+deb\d+)"
    r"-(?P<variant>(?:(?P<featureset>rt|cloud)-)?(?P<arch>[a-z0-9]+(?:-[a-z]+)?))$"
)
_RHEL = re.compile(
    r"^(?P<x>\d+)\.(?P<y>\d+)\.(?P<z>\d+)-(?P<build>[0-9][0-9A-Za-z._]*?)"
    r"\.(?P<dist>el\d+(?:_\d+)?)\.(?P<arch>x86_64|aarch64|ppc64le|s390x)"
    r"(?:\+(?P<variant>rt|64k|debug))?$"
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_KMM_SPLIT = re.compile(r"[.,-]")


@dataclass(frozen=True)
class KernelRelease:
    """A parsed `uname -r` string. `release` is always the exact original."""

    release: str
    family: Family
    x: int
    y: int
    z: int
    flavour: Flavour
    arch: str
    abi: str  # Debian ABI ("56", "deb12") or RHEL build ("427.18.1")

    @property
    def line(self) -> str:
        """The kernel line, e.g. '6.1' (what Debian's metapackages follow)."""
        return f"{self.x}.{self.y}"

    @property
    def upstream(self) -> tuple[int, int, int]:
        return (self.x, self.y, self.z)

    @property
    def normalized(self) -> str:
        """The release as KMM writes it into image tags and object names."""
        return normalize(self.release)

    @property
    def sort_key(self) -> tuple[int, int, int, tuple[int, ...], str]:
        nums = tuple(int(n) for n in re.findall(r"\d+", self.abi))
        return (self.x, self.y, self.z, nums, self.release)

    def rt_sibling(self) -> str | None:
        """The real-time kernel built from the same source, or None if this is one."""
        if self.flavour is Flavour.RT:
            return None
        if self.family is Family.DEBIAN:
            base = self.release[: len(self.release) - len(_debian_variant(self.release))]
            return f"{base}rt-{self.arch}"
        stem = self.release.split("+", 1)[0]
        return f"{stem}+rt"


def standard_sibling(release: str) -> str | None:
    """The standard kernel built from the same source as RT kernel `release` (whose
    toolkit carries it), or None when `release` is not an RT kernel."""
    parsed = try_parse(release)
    if parsed is None or parsed.flavour is not Flavour.RT:
        return None
    if parsed.family is Family.DEBIAN:
        head, sep, tail = release.rpartition("-rt-")
        return f"{head}-{tail}" if sep else None
    # The older RHEL RT form (…rt14.296.el9_2…) is a kernel of its own: no sibling.
    return release.removesuffix("+rt") if release.endswith("+rt") else None


def _debian_variant(release: str) -> str:
    m = _DEBIAN.match(release)
    assert m is not None
    return m.group("variant")


def normalize(text: str) -> str:
    """KMM's normalisation: characters outside [A-Za-z0-9._-] become '_'."""
    return _UNSAFE.sub("_", text)


def try_parse(release: str) -> KernelRelease | None:
    m = _DEBIAN.match(release)
    if m:
        featureset = m.group("featureset")
        flavour = {"rt": Flavour.RT, "cloud": Flavour.CLOUD, None: Flavour.STANDARD}[featureset]
        return KernelRelease(release, Family.DEBIAN, int(m["x"]), int(m["y"]), int(m["z"]),
                             flavour, m["arch"], m["abi"].lstrip("-+"))
    m = _RHEL.match(release)
    if m:
        build = m["build"]
        variant = m["variant"]
        if variant:
            flavour = Flavour(variant)
        elif re.search(r"(^|\.)rt\d", build):
            flavour = Flavour.RT
        else:
            flavour = Flavour.STANDARD
        return KernelRelease(release, Family.RHEL, int(m["x"]), int(m["y"]), int(m["z"]),
                             flavour, m["arch"], build)
    return None


_LINE = re.compile(r"^\d+\.\d+$")


def parse(release: str) -> KernelRelease:
    """Parse a kernel release or raise a DtkError that shows the accepted forms."""
    parsed = try_parse(release.strip())
    if parsed is None:
        raise DtkError(f"'{release}' is not a kernel release dtk understands",
                       hint=_parse_hint(release.strip()))
    return parsed


def _parse_hint(text: str) -> str:
    """What the user probably meant: the release behind a tag dtk printed (tags cannot
    hold '+'), or a kernel line given where one release is wanted."""
    if _LINE.match(text):
        return (f"{text} is a kernel line, not a release: use --kernels {text} for its "
                f"kernels (or --kernels {text},latest for the newest)")
    untagged = _untag(text)
    if untagged is not None:
        return f"did you mean {untagged}? (that is the release; {text} is its image tag)"
    return ("give it exactly as `uname -r` prints it, e.g. 6.1.0-56-amd64, "
            "6.12.117+deb12-rt-amd64 or 5.14.0-427.18.1.el9_4.x86_64+rt")


def _untag(text: str) -> str | None:
    """The release whose normalised (tag) form is `text`, when that is unambiguous."""
    for candidate in (re.sub(r"_deb(\d+)", r"+deb\1", text),
                      re.sub(r"\.(x86_64|aarch64|ppc64le|s390x)_(rt|64k|debug)$",
                             r".\1+\2", text)):
        if candidate != text and try_parse(candidate) is not None:
            return candidate
    return None


def kmm_variables(release: str) -> dict[str, str]:
    """The variables KMM substitutes in image names and sign paths.

    As KMM's kernel mapper does (`KernelComponentsAsEnvVars(NormalizeVersion(k))`):
    every one comes from the *normalised* kernel, split on [.,-] into at least three
    parts, so `6.12.117+deb12-amd64` gives KERNEL_Z `117_deb12` and no variable holds
    a `+`. There is no KERNEL_XY. Build args carry the raw release (`kmm_build_args`).
    """
    norm = normalize(release)
    parts = _KMM_SPLIT.split(norm)
    if len(parts) < 3:
        raise DtkError(f"kernel '{release}' has fewer than three [.,-] separated parts",
                       hint="KMM needs a full release such as 6.1.0-56-amd64")
    return {
        "KERNEL_FULL_VERSION": norm,
        "KERNEL_VERSION": norm,
        "KERNEL_XYZ": ".".join(parts[:3]),
        "KERNEL_X": parts[0],
        "KERNEL_Y": parts[1],
        "KERNEL_Z": parts[2],
    }


def kmm_build_args(release: str, mod_name: str, mod_namespace: str) -> dict[str, str]:
    """Build args KMM injects into a build: the kernel is the raw release here."""
    return {
        "KERNEL_VERSION": release,
        "KERNEL_FULL_VERSION": release,
        "MOD_NAME": mod_name,
        "MOD_NAMESPACE": mod_namespace,
    }


def substitute(template: str, variables: dict[str, str]) -> str:
    """KMM's substitution (a8m/envsubst, see `dtk.kernel.envsubst`): $VAR, ${VAR},
    $$, ${VAR:-default} and the rest; unknown variables become ''."""
    return envsubst(template, variables)
