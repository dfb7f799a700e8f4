"""Toolkit planning and Containerfile generation on recorded archive metadata."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dtk.distro import OsInfo
from dtk.distro.aptindex import iter_stanzas
from dtk.distro.debian import DebianCatalog, make_pool
from dtk.errors import DtkError
from dtk.toolkit import plan as tplan

DATA = Path(__file__).parent.parent / "data/archive/bookworm-amd64-kernels.Packages"
SOURCES = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n"


@pytest.fixture(scope="module")
def distro() -> DebianCatalog:
    pool = make_pool(iter_stanzas(DATA.read_text(), lambda _name: True))
    return DebianCatalog(pool, OsInfo("debian", "12", "bookworm", "amd64"), SOURCES)


def test_auto_rt_sibling_and_tags(distro: DebianCatalog) -> None:
    plan = tplan.plan_toolkit(distro, "6.12.117+deb12-amd64")
    assert plan.kernels == ("6.12.117+deb12-amd64", "6.12.117+deb12-rt-amd64")
    assert plan.tag == "localhost/driver-toolkit:6.12.117_deb12-amd64"
    assert plan.rt_release == "6.12.117+deb12-rt-amd64"
    labels = plan.labels()
    assert labels["kernel-version"] == "6.12.117+deb12-amd64"
    assert labels["kernel-rt-version"] == "6.12.117+deb12-rt-amd64"
    assert labels["name"] == "driver-toolkit"
    assert labels["org.opencontainers.image.source"] == "http://mirror.example/debian"


def test_rt_none_and_rt_kernel_itself(distro: DebianCatalog) -> None:
    assert tplan.plan_toolkit(distro, "6.1.0-56-amd64", "none").rt_release == ""
    rt = tplan.plan_toolkit(distro, "6.1.0-56-rt-amd64", "none")
    assert rt.kernels == ("6.1.0-56-rt-amd64",)
    assert rt.rt_release == "6.1.0-56-rt-amd64"


def test_an_rt_kernel_gets_its_standard_siblings_toolkit(distro: DebianCatalog) -> None:
    """Asked for the RT kernel, dtk plans the toolkit that carries it: the standard
    sibling's (the same image `dtk build` and `dtk vmtest` use for it)."""
    rt = tplan.plan_toolkit(distro, "6.1.0-56-rt-amd64")
    assert rt.kernels == ("6.1.0-56-amd64", "6.1.0-56-rt-amd64")
    assert rt.tag == "localhost/driver-toolkit:6.1.0-56-amd64"


def test_rt_from_another_source_version_is_refused(distro: DebianCatalog) -> None:
    with pytest.raises(DtkError, match="different source versions"):
        tplan.plan_toolkit(distro, "6.1.0-47-amd64", "6.1.0-56-rt-amd64")
    with pytest.raises(DtkError, match="not a real-time kernel"):
        tplan.plan_toolkit(distro, "6.1.0-56-amd64", "6.1.0-56-cloud-amd64")


def test_shared_layers_do_not_depend_on_the_kernel(distro: DebianCatalog) -> None:
    a = tplan.plan_toolkit(distro, "6.1.0-56-amd64")
    b = tplan.plan_toolkit(distro, "6.12.117+deb12-cloud-amd64")
    assert (a.base_tag, a.tools_tag) == (b.base_tag, b.tools_tag)
    assert tplan.tools_containerfile(a) == tplan.tools_containerfile(b)
    assert a.plan_hash != b.plan_hash


def test_kernel_containerfile_pins_versions_and_gates(distro: DebianCatalog) -> None:
    plan = tplan.plan_toolkit(distro, "6.1.0-47-amd64")
    text = tplan.kernel_containerfile(plan)
    assert text.startswith("# driver toolkit for 6.1.0-47-amd64 and its RT sibling")
    assert f"FROM {plan.tools_tag}\n" in text
    assert "linux-image-6.1.0-47-amd64=6.1.170-3" in text
    assert "linux-image-6.1.0-47-rt-amd64=6.1.170-3" in text
    assert "# note: linux-kbuild-6.1 6.1.170-3 is not in the archive" in text
    assert text.count("sed -n 's/^CONFIG_CC_VERSION_TEXT=") == 2
    assert "dtk gate: unexpected kernel package" in text
    # One RUN per kernel, so K and its RT sibling are separate layers.
    assert len(re.findall(r"^RUN apt-get update", text, re.M)) == 2


def test_release_json_template_has_the_driver_toolkit_keys(distro: DebianCatalog) -> None:
    plan = tplan.plan_toolkit(distro, "6.1.0-56-amd64")
    line = next(x for x in tplan.kernel_containerfile(plan).splitlines() if "printf '{" in x)
    template = line.split("printf '", 1)[1].split("\\n' ", 1)[0].replace("\\n", "\n")
    data = json.loads(template % ("debian", "12", "amd64", "12.2.0"))
    assert data["KERNEL_VERSION"] == "6.1.0-56-amd64"
    assert data["RT_KERNEL_VERSION"] == "6.1.0-56-rt-amd64"
    assert "RHEL_VERSION" not in data
    assert set(data) == {"KERNEL_VERSION", "RT_KERNEL_VERSION", "OS_ID", "OS_VERSION_ID",
                         "ARCH", "KERNEL_PACKAGE_VERSION", "GCC_VERSION"}


def test_tools_include_the_kernels_compiler(distro: DebianCatalog) -> None:
    plan = tplan.plan_toolkit(distro, "6.1.0-56-amd64")
    tools = tplan.tools_containerfile(plan)
    for package in ("gcc-12", "dwarves", "kmod", "libelf-dev", "abigail-tools", "mokutil"):
        assert f" {package} " in tools
    assert "dpkg-divert --local --rename --add /usr/sbin/update-initramfs" in tools


def with_package(pool_text: str, name: str, version: str) -> DebianCatalog:
    extra = f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n\n"
    pool = make_pool(iter_stanzas(pool_text.rstrip("\n") + "\n\n" + extra, lambda _n: True))
    return DebianCatalog(pool, OsInfo("debian", "12", "bookworm", "amd64"), SOURCES)


def test_base_and_tools_layers_are_keyed_by_resolved_versions() -> None:
    """A new gcc rebuilds the tools layer (and so every toolkit); a libc security update
    rebuilds the base; an unrelated package changes nothing."""
    text = DATA.read_text()
    release = "6.1.0-56-amd64"
    plans = {key: tplan.plan_toolkit(with_package(text, name, version), release)
             for key, (name, version) in {
                 "gcc-a": ("gcc-12", "12.2.0-14"), "gcc-b": ("gcc-12", "12.2.0-14+deb12u1"),
                 "libc": ("libc6", "2.36-9+deb12u10"), "other": ("hello", "2.10-3")}.items()}
    assert "gcc-12=12.2.0-14+deb12u1" in tplan.tools_containerfile(plans["gcc-b"])
    assert plans["gcc-a"].tools_tag != plans["gcc-b"].tools_tag
    assert plans["gcc-a"].plan_hash != plans["gcc-b"].plan_hash
    assert plans["gcc-a"].base_tag == plans["gcc-b"].base_tag
    assert plans["libc"].base_tag != plans["other"].base_tag
    assert "libc6=2.36-9+deb12u10" in tplan.base_containerfile(plans["libc"])
    assert plans["other"].base_tag == plans["gcc-a"].base_tag
