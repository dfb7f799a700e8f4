"""KMM's variable substitution, with expected values from KMM's and its library's code.

* `internal/utils/replaceStrings_test.go` (KMM): KernelComponentsAsEnvVars, ReplaceInTemplates;
* `internal/module/kernelmapper.go` (KMM): the variables are computed from the
  *normalised* kernel (`kernel.NormalizeVersion`), for containerImage and for sign;
* `parse/parse_test.go` of github.com/a8m/envsubst v1.4.2 (the version in KMM's go.mod),
  relaxed mode (KMM passes empty Restrictions): every case and its expected output.
"""

from __future__ import annotations

import pytest

from dtk import kernel as kern
from dtk.errors import DtkError
from dtk.kernel.envsubst import envsubst

FAKE_ENV = {"BAR": "bar", "FOO": "foo", "EMPTY": "", "ALSO_EMPTY": "", "A": "AAA"}

ENVSUBST_CASES = [
    ("", ""), ("$BAR", "bar"), ("$BAR baz", "bar baz"), ("$BAR$FOO", "barfoo"),
    ("$BAR - $FOO", "bar - foo"), ("$_ bar", "$_ bar"), ("${_} bar", "${_} bar"),
    ("${BAR}baz", "barbaz"), ("${NOTSET-$BAR}", "bar"), ("${NOTSET=$BAR}", "bar"),
    ("${EMPTY-$BAR}", ""), ("${EMPTY=$BAR}", ""), ("${EMPTY:-$BAR}", "bar"),
    ("${EMPTY:=$BAR}", "bar"), ("${EMPTY+hello}", "hello"), ("${EMPTY:+hello}", "hello"),
    ("${NOTSET+hello}", ""), ("${NOTSET:+hello}", ""),
    ("hello $BAR\nhello ${EMPTY:=$FOO}", "hello bar\nhello foo"),
    ("${hello:=wo_rld} ${foo:=bar_baz}", "wo_rld bar_baz"),
    ("name: ${NAME:=foo_qux}, key: ${EMPTY:=baz_bar}", "name: foo_qux, key: baz_bar"),
    ("prop=${HOME_URL-http://localhost:8080}", "prop=http://localhost:8080"),
    ("${NOTSET--1}", "-1"), ("${NOTSET:--1}", "-1"), ("${NOTSET=-1}", "-1"),
    ("${NOTSET:==1}", "=1"), ("${A}", "AAA"), ("${NOTSET}", ""), ("${EMPTY}", ""),
    ("$NOTSET", ""), ("$EMPTY", ""),
    ("${NOTSET-$ALSO_NOTSET}", ""), ("${NOTSET:-$ALSO_NOTSET}", ""),
    ("${NOTSET=$ALSO_NOTSET}", ""), ("${NOTSET:=$ALSO_NOTSET}", ""),
    ("${NOTSET+$ALSO_NOTSET}", ""), ("${NOTSET:+$ALSO_NOTSET}", ""),
    ("${EMPTY-$NOTSET}", ""), ("${EMPTY:-$NOTSET}", ""), ("${EMPTY=$NOTSET}", ""),
    ("${EMPTY:=$NOTSET}", ""), ("${EMPTY+$NOTSET}", ""), ("${EMPTY:+$NOTSET}", ""),
    ("${NOTSET-$EMPTY}", ""), ("${NOTSET:-$EMPTY}", ""), ("${NOTSET=$EMPTY}", ""),
    ("${NOTSET:=$EMPTY}", ""), ("${NOTSET+$EMPTY}", ""), ("${NOTSET:+$EMPTY}", ""),
    ("${EMPTY-$ALSO_EMPTY}", ""), ("${EMPTY:-$ALSO_EMPTY}", ""), ("${EMPTY=$ALSO_EMPTY}", ""),
    ("${EMPTY:=$ALSO_EMPTY}", ""), ("${EMPTY+$ALSO_EMPTY}", ""), ("${EMPTY:+$ALSO_EMPTY}", ""),
    ("FOO $$BAR BAZ", "FOO $BAR BAZ"), ("FOO $${BAR} BAZ", "FOO ${BAR} BAZ"),
    ("$$$BAR", "$bar"), ("$$${BAZ:-baz}", "$baz"),
]


@pytest.mark.parametrize(("template", "expected"), ENVSUBST_CASES)
def test_envsubst_as_kmms_library(template: str, expected: str) -> None:
    assert envsubst(template, FAKE_ENV) == expected


@pytest.mark.parametrize("template", ["hello ${", "${A\n}", "${A:-x"])
def test_unclosed_brace_is_an_error(template: str) -> None:
    with pytest.raises(DtkError, match="closing brace expected"):
        envsubst(template, FAKE_ENV)


def test_the_library_would_hang_dtk_says_why() -> None:
    with pytest.raises(DtkError, match="closing brace"):
        envsubst("${A:-$_}", FAKE_ENV)


def test_replace_in_templates_example() -> None:
    env = {"A": "AAA", "B": "BBB", "C": "CCC"}
    assert [envsubst(t, env) for t in ("string with template $A", "string with template ${B}",
                                       "string without template")] == \
        ["string with template AAA", "string with template BBB", "string without template"]


def test_kernel_components_example() -> None:
    assert kern.kmm_variables("6.0.15-300.fc37.x86_64") == {
        "KERNEL_FULL_VERSION": "6.0.15-300.fc37.x86_64",
        "KERNEL_VERSION": "6.0.15-300.fc37.x86_64",
        "KERNEL_XYZ": "6.0.15", "KERNEL_X": "6", "KERNEL_Y": "0", "KERNEL_Z": "15"}


def test_kernel_components_come_from_the_normalised_kernel() -> None:
    """KMM calls KernelComponentsAsEnvVars(kernel.NormalizeVersion(k)): '+' is '_' before
    the split on [.,-], so no variable (hence no tag) can hold a '+'."""
    v = kern.kmm_variables("6.12.117+deb12-amd64")
    assert (v["KERNEL_XYZ"], v["KERNEL_X"], v["KERNEL_Y"], v["KERNEL_Z"]) == \
        ("6.12.117_deb12", "6", "12", "117_deb12")
    assert v["KERNEL_FULL_VERSION"] == "6.12.117_deb12-amd64"
    rt = kern.kmm_variables("5.14.0-427.18.1.el9_4.x86_64+rt")
    assert rt["KERNEL_Z"] == "0" and rt["KERNEL_FULL_VERSION"].endswith("x86_64_rt")
    assert not any("+" in value for value in v.values())


def test_fewer_than_three_components_is_an_error() -> None:
    with pytest.raises(DtkError, match="three"):
        kern.kmm_variables("test")


def test_substitute_is_kmms() -> None:
    v = kern.kmm_variables("6.12.117+deb12-amd64")
    assert kern.substitute("r/m:${KERNEL_Z}-$$x-${NOPE:-dflt}", v) == "r/m:117_deb12-$x-dflt"
