"""The kernel catalog and per-kernel package sets, on recorded real archive metadata.

tests/data/archive/bookworm-amd64-kernels.Packages holds the linux-* stanzas of
Debian bookworm, bookworm-updates and bookworm-security for amd64 as served on
2026-11-22 (fields trimmed to those dtk reads).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dtk.distro import find_kernel
from dtk.distro.aptindex import iter_stanzas
from dtk.distro.debian import Pool, catalog, kernel_packages, make_pool
from dtk.errors import DtkError

DATA = Path(__file__).parent.parent / "data/archive/bookworm-amd64-kernels.Packages"


@pytest.fixture(scope="module")
def pool() -> Pool:
    return make_pool(iter_stanzas(DATA.read_text(), lambda _name: True))


def test_catalog_lists_every_flavour_newest_first(pool: Pool) -> None:
    entries = catalog(pool)
    releases = [e.release for e in entries]
    assert releases[0] == "6.12.117+deb12-rt-amd64"
    assert {"6.1.0-56-amd64", "6.1.0-56-rt-amd64", "6.1.0-56-cloud-amd64",
            "6.1.0-47-amd64", "6.12.117+deb12-cloud-amd64"} <= set(releases)
    assert {e.flavour for e in entries} == {"standard", "rt", "cloud"}
    assert not any(r.endswith(("-unsigned", "-dbg")) for r in releases)
    assert len(releases) == len(set(releases))


def test_metapackages_point_at_the_newest(pool: Pool) -> None:
    by = {e.release: e for e in catalog(pool)}
    assert by["6.1.0-56-amd64"].metapackages == ("linux-image-amd64",)
    assert by["6.1.0-56-rt-amd64"].metapackages == ("linux-image-rt-amd64",)
    assert by["6.12.117+deb12-amd64"].metapackages == ("linux-image-6.12-amd64",)
    assert by["6.1.0-47-amd64"].metapackages == ()


def test_source_is_the_kernel_source_not_the_signed_wrapper(pool: Pool) -> None:
    by = {e.release: e for e in catalog(pool)}
    assert (by["6.1.0-56-amd64"].source, by["6.1.0-56-amd64"].source_version) == \
        ("linux", "6.1.192-2")
    assert by["6.12.117+deb12-amd64"].source == "linux-6.12"


def test_exact_packages_for_the_newest_kernel(pool: Pool) -> None:
    pkgs = kernel_packages(pool, "6.1.0-56-amd64")
    specs = {p.spec for p in pkgs.packages}
    assert specs == {
        "linux-image-6.1.0-56-amd64=6.1.192-2", "linux-headers-6.1.0-56-amd64=6.1.192-2",
        "linux-headers-6.1.0-56-common=6.1.192-2", "linux-kbuild-6.1=6.1.192-2",
        "linux-compiler-gcc-12-x86=6.1.192-2", "linux-libc-dev=6.1.192-2",
    }
    assert all(p.exact for p in pkgs.packages)
    assert pkgs.compiler_package == "gcc-12"


def test_old_abi_uses_newest_kbuild_and_says_so(pool: Pool) -> None:
    pkgs = kernel_packages(pool, "6.1.0-47-amd64")
    by = {p.name: p for p in pkgs.packages}
    assert by["linux-image-6.1.0-47-amd64"].version == "6.1.170-3"
    assert by["linux-headers-6.1.0-47-common"].version == "6.1.170-3"
    assert not by["linux-kbuild-6.1"].exact
    assert "not in the archive" in by["linux-kbuild-6.1"].note


def test_rt_headers_use_the_rt_common_package(pool: Pool) -> None:
    names = {p.name for p in kernel_packages(pool, "6.12.117+deb12-rt-amd64").packages}
    assert "linux-headers-6.12.117+deb12-common-rt" in names
    assert "linux-kbuild-6.12.117+deb12" in names


def test_unknown_kernel_names_closest(pool: Pool) -> None:
    with pytest.raises(DtkError) as info:
        find_kernel(catalog(pool), "6.1.0-99-amd64")
    assert "6.1.0-56-amd64" in (info.value.hint or "")
    with pytest.raises(DtkError) as info:
        find_kernel(catalog(pool), "6.18.44-fc-v657")
    assert "closest available" in (info.value.hint or "")
