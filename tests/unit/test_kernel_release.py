"""Kernel release parsing and KMM's variables (pure)."""

from __future__ import annotations

import pytest

from dtk import kernel as kern
from dtk.errors import DtkError


@pytest.mark.parametrize(
    ("release", "family", "xyz", "flavour", "arch", "abi"),
    [
        ("6.1.0-56-amd64", "debian", (6, 1, 0), "standard", "amd64", "56"),
        ("6.1.0-56-rt-amd64", "debian", (6, 1, 0), "rt", "amd64", "56"),
        ("6.1.0-47-cloud-amd64", "debian", (6, 1, 0), "cloud", "amd64", "47"),
        ("6.12.117+deb12-cloud-amd64", "debian", (6, 12, 117), "cloud", "amd64", "deb12"),
        ("6.12.117+deb12-rt-amd64", "debian", (6, 12, 117), "rt", "amd64", "deb12"),
        ("6.1.0-56-arm64", "debian", (6, 1, 0), "standard", "arm64", "56"),
        ("5.14.0-427.18.1.el9_4.x86_64", "rhel", (5, 14, 0), "standard", "x86_64", "427.18.1"),
        ("5.14.0-427.18.1.el9_4.x86_64+rt", "rhel", (5, 14, 0), "rt", "x86_64", "427.18.1"),
        ("5.14.0-427.18.1.el9_4.aarch64+64k", "rhel", (5, 14, 0), "64k", "aarch64", "427.18.1"),
        ("5.14.0-284.11.1.rt14.296.el9_2.x86_64", "rhel", (5, 14, 0), "rt", "x86_64",
         "284.11.1.rt14.296"),
        ("6.12.0-55.9.1.el10_0.x86_64", "rhel", (6, 12, 0), "standard", "x86_64", "55.9.1"),
    ],
)
def test_parse(release: str, family: str, xyz: tuple[int, int, int], flavour: str, arch: str,
               abi: str) -> None:
    k = kern.parse(release)
    assert k.release == release
    assert (k.family.value, k.upstream, k.flavour.value, k.arch, k.abi) == (
        family, xyz, flavour, arch, abi)


@pytest.mark.parametrize("bad", ["", "linux", "6.18.44-fc-v657", "6.1.0-56-amd64 x",
                                 "5.14.0-427.el9.sparc"])
def test_parse_rejects(bad: str) -> None:
    assert kern.try_parse(bad) is None
    with pytest.raises(DtkError, match="not a kernel release") as info:
        kern.parse(bad)
    assert "uname -r" in (info.value.hint or "")


@pytest.mark.parametrize(("given", "hint"), [
    ("6.1", "6.1 is a kernel line, not a release: use --kernels 6.1"),
    ("6.12.117_deb12-amd64", "did you mean 6.12.117+deb12-amd64?"),
    ("6.12.117_deb12-rt-amd64", "did you mean 6.12.117+deb12-rt-amd64?"),
    ("5.14.0-427.18.1.el9_4.x86_64_rt", "did you mean 5.14.0-427.18.1.el9_4.x86_64+rt?"),
])
def test_parse_suggests_what_the_user_meant(given: str, hint: str) -> None:
    with pytest.raises(DtkError, match="not a kernel release") as info:
        kern.parse(given)
    assert hint in (info.value.hint or "")


@pytest.mark.parametrize(
    ("release", "sibling"),
    [
        ("6.1.0-56-amd64", "6.1.0-56-rt-amd64"),
        ("6.1.0-56-cloud-amd64", "6.1.0-56-rt-amd64"),
        ("6.12.117+deb12-amd64", "6.12.117+deb12-rt-amd64"),
        ("6.1.0-56-rt-amd64", None),
        ("5.14.0-427.18.1.el9_4.x86_64", "5.14.0-427.18.1.el9_4.x86_64+rt"),
        ("5.14.0-427.18.1.el9_4.x86_64+rt", None),
    ],
)
def test_rt_sibling(release: str, sibling: str | None) -> None:
    assert kern.parse(release).rt_sibling() == sibling


def test_normalize_like_kmm() -> None:
    assert kern.normalize("6.12.117+deb12-amd64") == "6.12.117_deb12-amd64"
    assert kern.normalize("5.14.0-427.18.1.el9_4.x86_64+rt") == "5.14.0-427.18.1.el9_4.x86_64_rt"
    assert kern.normalize("6.1.0-56-amd64") == "6.1.0-56-amd64"


def test_kmm_variables() -> None:
    v = kern.kmm_variables("5.14.0-427.18.1.el9_4.x86_64+rt")
    assert v == {
        "KERNEL_FULL_VERSION": "5.14.0-427.18.1.el9_4.x86_64_rt",
        "KERNEL_VERSION": "5.14.0-427.18.1.el9_4.x86_64_rt",
        "KERNEL_XYZ": "5.14.0",
        "KERNEL_X": "5", "KERNEL_Y": "14", "KERNEL_Z": "0",
    }
    assert "KERNEL_XY" not in v
    # KMM splits the normalised kernel (kernelmapper.go), so '+' is already '_'.
    assert kern.kmm_variables("6.12.117+deb12-amd64")["KERNEL_Z"] == "117_deb12"


def test_kmm_variables_need_three_parts() -> None:
    with pytest.raises(DtkError, match="three"):
        kern.kmm_variables("6.1")


def test_build_args_keep_the_raw_release() -> None:
    args = kern.kmm_build_args("6.12.117+deb12-rt-amd64", "mod", "ns")
    assert args["KERNEL_FULL_VERSION"] == "6.12.117+deb12-rt-amd64"
    assert args["KERNEL_VERSION"] == "6.12.117+deb12-rt-amd64"
    assert (args["MOD_NAME"], args["MOD_NAMESPACE"]) == ("mod", "ns")


def test_substitute_like_envsubst() -> None:
    variables = kern.kmm_variables("6.12.117+deb12-amd64")
    assert kern.substitute("reg/ns/m:${KERNEL_FULL_VERSION}", variables) == \
        "reg/ns/m:6.12.117_deb12-amd64"
    assert kern.substitute("$KERNEL_X.$KERNEL_Y-$UNKNOWN!", variables) == "6.12-!"


def test_sort_key_orders_abis_numerically() -> None:
    releases = ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.12.117+deb12-amd64", "6.12.99+deb12-amd64"]
    ordered = sorted(releases, key=lambda r: kern.parse(r).sort_key)
    assert ordered == ["6.1.0-9-amd64", "6.1.0-56-amd64", "6.12.99+deb12-amd64",
                       "6.12.117+deb12-amd64"]
