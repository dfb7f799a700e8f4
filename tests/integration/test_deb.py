"""dtk's Debian package (`make deb`): what a host owner installs. Its contents, lintian at
every level, its man pages (one per command, from the CLI's own help), and its RE2 binding
(built against Debian's libre2) held to google-re2's answers. Installing it with apt on a
real Debian node, booting and purging it: tests/integration/test_node_vm.py."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtk.cli.main import full_cli
from dtk.distro.debian import DebianArchive
from dtk.kmmapi import goregexp
from dtk.kmmapi import model as m
from dtk.kmmapi.plan import find_mapping
from tests.integration import debpkg

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
SITE = "usr/lib/python3/dist-packages"


@pytest.fixture(scope="module")
def files(dtk_deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return debpkg.unpacked(dtk_deb, tmp_path_factory.mktemp("deb-files"))


@pytest.fixture(scope="module")
def binding(files: Path) -> goregexp.Binding:
    """The package's _re2, loaded from its file in the package."""
    (path,) = (files / SITE / "dtk/kmmapi").glob("_re2.*.so")
    spec = importlib.util.spec_from_file_location("dtk.kmmapi._re2", path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return goregexp.Binding(module)


def test_the_package_holds_what_a_host_needs_as_package_files(dtk_deb: Path,
                                                               files: Path) -> None:
    for name, dest in (("node-postinst.sh", "etc/kernel/postinst.d/dtk-node"),
                       ("node-postrm.sh", "etc/kernel/postrm.d/dtk-node")):
        assert (files / dest).read_bytes() == (ROOT / "dtk/data" / name).read_bytes()
        assert (files / dest).stat().st_mode & 0o777 == 0o755
    assert (files / "DEBIAN/conffiles").read_text().split() == [
        "/etc/kernel/postinst.d/dtk-node", "/etc/kernel/postrm.d/dtk-node"]
    unit = (files / "lib/systemd/system/dtk-node.service").read_text()
    assert unit == (ROOT / "dtk/data/dtk-node.service").read_text()
    assert "deb-systemd-helper enable 'dtk-node.service'" in \
        (files / "DEBIAN/postinst").read_text()  # dh_installsystemd enables it
    for state in ("var/lib/dtk", "var/cache/dtk", "var/log/dtk"):
        assert (files / state).is_dir()
    assert (files / "usr/bin/dtk").is_file()
    depends = subprocess.run(["dpkg-deb", "-f", str(dtk_deb), "Depends"], check=True,
                             capture_output=True, text=True).stdout
    names = {d.split()[0] for d in depends.split(",")}
    assert {"python3-click", "python3-yaml", "python3-cryptography", "python3-pyelftools",
            "python3-zstandard", "python3-lz4", "skopeo", "kmod", "libre2-9"} <= names
    assert not any("re2" in n and n != "libre2-9" for n in names), depends


def test_lintian_has_nothing_to_say_at_any_level(dtk_deb: Path) -> None:
    """`make deb` fails on errors and warnings; info, pedantic and experimental tags are
    none either (the overridden ones are explained in debian/dtk.lintian-overrides)."""
    done = subprocess.run(["lintian", "-I", "-E", "--pedantic", str(dtk_deb)],
                          capture_output=True, text=True, timeout=600, check=False)
    tags = [line for line in done.stdout.splitlines() if re.match(r"[EWIPXC]: ", line)]
    assert tags == [], done.stdout


def _command_paths(group: click.Group, prefix: tuple[str, ...]) -> Iterator[tuple[str, ...]]:
    yield prefix
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _command_paths(command, (*prefix, name))
        elif not command.hidden:
            yield (*prefix, name)


def test_every_command_has_a_man_page_made_from_its_help(files: Path) -> None:
    pages = files / "usr/share/man/man1"
    paths = list(_command_paths(full_cli(), ("dtk",)))
    assert len(paths) > 30
    for path in paths:
        page = pages / f"{'-'.join(path)}.1.gz"
        assert page.is_file(), page
    shown = subprocess.run(["man", "--warnings", "-l", str(pages / "dtk-node-add.1.gz")],
                           capture_output=True, text=True, timeout=60, check=True,
                           env={"MANWIDTH": "100", "PATH": "/usr/bin:/bin"})
    assert shown.stderr == ""
    text = re.sub(r".\x08", "", shown.stdout)  # overstrike (bold) as man prints it
    option = next(o for o in full_cli().commands["node"].commands["add"].params  # type: ignore[attr-defined]
                  if o.name == "require_signature")
    assert "--require-signature" in text
    assert " ".join(option.help.split()[:6]) in " ".join(text.split())


KERNEL_CHARS = "0123456789.-+~_abcdefghijklmnopqrstuvwxyz"
TOKENS = ["6", "1", "a", "d", ".", r"\.", r"\d", r"\w", r"\s", r"\b", r"\B", "^", "$", "-",
          "+", "*", "?", "+?", "{2}", "{1,3}", "{2,}", "{,2}", "(", ")", "(?:", "(?i)",
          "(?s)", "(?U)", "(?P<n>", "(?<n>", "|", "[", "]", "[^", "[[:alpha:]]",
          "[[:digit:]]", "[a-z]", r"\pL", r"\p{Greek}", r"\PN", r"\Q", r"\E", r"\z",
          r"\Z", r"\A", r"\C", r"\1", "(?=", "(?!", r"\x41", r"\x{263a}", "é", "amd64",
          "rt", "+deb13", "{1001}", "\\"]
NAMED_GROUP = "(?<"  # RE2 2023-06 and Go 1.22; Debian 12's libre2 (2022-06-01) predates it


@pytest.fixture(scope="module")
def releases(archive: DebianArchive) -> list[str]:
    """The archive's kernel releases as it publishes them today."""
    return sorted({entry.release for entry in archive.kernels()})


def _verdict(engine: goregexp.Engine, pattern: str,
             kernels: list[str]) -> tuple[str, ...] | tuple[bool, ...]:
    try:
        compiled = engine.compile(pattern)
    except goregexp.RegexpError as exc:
        return ("refused", str(exc))
    return tuple(compiled.search(k) for k in kernels)


def test_the_binding_evaluates_kernel_mappings_as_google_re2(
        binding: goregexp.Binding, releases: list[str]) -> None:
    """Every generated pattern, against the archive's releases and random release-like
    strings: the same verdict (the same reason when refused) from Debian's libre2 through
    dtk's binding as from google-re2. The one difference, named groups spelled (?<n>…),
    is a refusal with RE2's reason (never another match); (?P<n>…) works in both."""
    google = goregexp.engine()
    assert google.name == "google-re2"
    seen = {"same": 0, "named": 0}

    @settings(max_examples=3000, deadline=None, database=None)
    @given(st.lists(st.sampled_from(TOKENS), max_size=12).map("".join),
           st.lists(st.text(KERNEL_CHARS, max_size=30), max_size=3))
    def agree(pattern: str, extra: list[str]) -> None:
        kernels = [*releases, *extra, ""]
        ours, theirs = _verdict(binding, pattern, kernels), _verdict(google, pattern, kernels)
        if ours != theirs and NAMED_GROUP in pattern:
            assert ours[:1] == ("refused",) and "(?<" in str(ours[1]), (pattern, ours)
            seen["named"] += 1
            return
        assert ours == theirs, pattern
        seen["same"] += 1

    agree()
    print(f"binding vs google-re2: {seen}")
    assert seen["same"] > 1000


def test_validate_and_mapping_run_on_the_binding(binding: goregexp.Binding,
                                                 releases: list[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """What a host with the package runs: KMM's first-match mapping on Debian's libre2."""
    monkeypatch.setattr(goregexp, "engine", lambda: binding)
    assert goregexp.compile_regexp(r"-rt-").search("6.1.0-47-rt-amd64")
    kernel = releases[-1]
    mappings = (m.KernelMapping(regexp=r"^\d+\.\d+\.\d+-\d+-cloud-amd64$"),
                m.KernelMapping(regexp=re.escape(kernel) + "$"))
    found = find_mapping(mappings, kernel)
    assert found is not None
    assert found[0] == (0 if re.fullmatch(r"\d+\.\d+\.\d+-\d+-cloud-amd64", kernel) else 1)
    with pytest.raises(goregexp.RegexpError, match=r"invalid perl operator: \(\?="):
        goregexp.compile_regexp(r"6\.1(?=\.0)")
