"""Planning a build matrix: names, build args, input hashes and cache keys (no tools)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from dtk.digest import inputs_digest, tree_digest
from dtk.driver.extras import extras_key, missing
from dtk.driver.matrix import resolve_toolkits
from dtk.driver.naming import DEFAULT_TEMPLATE, image_name, module_slug
from dtk.driver.plan import (
    HASH_LABEL,
    BuildOptions,
    BuildSecret,
    ImageRef,
    build_args_for,
    plan_matrix,
)
from dtk.driver.sources import (
    BrokenSource,
    ContainerfileSource,
    DkmsGroup,
    DkmsPackage,
    containerfile_source,
    group_by_depends,
    package_depends,
)
from dtk.errors import DtkError
from dtk.kernel import standard_sibling

K = "6.1.0-56-amd64"
KRT = "6.1.0-56-rt-amd64"
K612 = "6.12.117+deb12-amd64"
TK = ImageRef("localhost/driver-toolkit:6.1.0-56-amd64", "sha256:aaa")
BASE = ImageRef("localhost/dtk-kmod-base:1", "sha256:bbb")


def test_image_name_substitutes_kmm_variables_normalised() -> None:
    name = image_name("reg.example:5000/${MOD_NAMESPACE}/${MOD_NAME}:${KERNEL_FULL_VERSION}",
                      "5.14.0-427.18.1.el9_4.x86_64+rt", "gpu", "ns")
    assert name == "reg.example:5000/ns/gpu:5.14.0-427.18.1.el9_4.x86_64_rt"
    assert image_name(DEFAULT_TEMPLATE, K612, "m", "d") == \
        "localhost/dtk-driver/m:6.12.117_deb12-amd64"
    assert image_name("localhost/m-$KERNEL_X.$KERNEL_Y", K, "m", "d") == \
        "localhost/m-6.1:6.1.0-56-amd64"  # no tag given: KMM's convention is added


@pytest.mark.parametrize("template", ["localhost/UPPER:${KERNEL_FULL_VERSION}",
                                      "localhost/${NOPE}:x", "bad name:1"])
def test_invalid_image_names_are_user_errors(template: str) -> None:
    with pytest.raises(DtkError, match="not a valid image reference"):
        image_name(template, K, "m", "d")


def test_module_slug() -> None:
    assert module_slug("Acpi_Call DKMS") == "acpi_call-dkms"
    assert module_slug("...") == "module"


def _containerfile(tmp_path: Path, text: str = "FROM ${DTK_AUTO}\n") -> ContainerfileSource:
    (tmp_path / "Containerfile").write_text(text)
    if not (tmp_path / "mod.c").exists():
        (tmp_path / "mod.c").write_text("int x;\n")
    return containerfile_source(tmp_path / "Containerfile", None, "mod")


def test_kmm_build_args_win_over_user_args(tmp_path: Path) -> None:
    source = _containerfile(tmp_path, "ARG DTK_AUTO\nARG DTK_BASE\nFROM ${DTK_AUTO}\n")
    options = BuildOptions(DEFAULT_TEMPLATE, "ns", None,
                           (("KERNEL_FULL_VERSION", "mine"), ("EXTRA", "1")))
    args = build_args_for(source, KRT, "mod", options, toolkit=TK, base=BASE)
    assert args == {"KERNEL_FULL_VERSION": KRT, "KERNEL_VERSION": KRT, "MOD_NAME": "mod",
                    "MOD_NAMESPACE": "ns", "EXTRA": "1", "DTK_AUTO": TK.name,
                    "DTK_BASE": BASE.name}


def test_dtk_auto_only_when_the_containerfile_uses_it(tmp_path: Path) -> None:
    source = _containerfile(tmp_path, "FROM docker.io/library/debian:12\n")
    args = build_args_for(source, K, "mod", BuildOptions(DEFAULT_TEMPLATE), toolkit=TK,
                          base=BASE)
    assert "DTK_AUTO" not in args and "DTK_BASE" not in args


def test_matrix_has_a_cell_per_source_and_kernel(tmp_path: Path) -> None:
    source = _containerfile(tmp_path)
    matrix = plan_matrix([source], [K, KRT], {K: TK, KRT: TK}, BASE,
                         BuildOptions(DEFAULT_TEMPLATE))
    assert [c.image for c in matrix.cells] == ["localhost/dtk-driver/mod:6.1.0-56-amd64",
                                               "localhost/dtk-driver/mod:6.1.0-56-rt-amd64"]
    assert len({c.input_hash for c in matrix.cells}) == 2
    labels = matrix.cells[0].labels()
    assert labels[HASH_LABEL] == matrix.cells[0].input_hash
    assert labels["dtk.build.toolkit-digest"] == "sha256:aaa"
    assert labels["dtk.build.source-digest"] == source.digest
    assert matrix.cells[0].base is None  # the Containerfile does not use DTK_BASE


def _hash(source: ContainerfileSource, toolkit: ImageRef = TK,
          args: tuple[tuple[str, str], ...] = ()) -> str:
    matrix = plan_matrix([source], [K], {K: toolkit}, BASE,
                         BuildOptions(DEFAULT_TEMPLATE, build_args=args))
    return matrix.cells[0].input_hash


def test_cache_key_changes_with_every_input(tmp_path: Path) -> None:
    source = _containerfile(tmp_path)
    first = _hash(source)
    assert _hash(_containerfile(tmp_path)) == first  # unchanged inputs: same key
    assert _hash(source, ImageRef(TK.name, "sha256:new")) != first  # toolkit rebuilt
    assert _hash(source, args=(("X", "1"),)) != first  # build args
    (tmp_path / "mod.c").write_text("int y;\n")
    assert _hash(_containerfile(tmp_path)) != first  # source content


def test_tree_digest_ignores_timestamps_but_not_modes(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("x")
    first = tree_digest(tmp_path)
    (tmp_path / "a").touch()
    assert tree_digest(tmp_path) == first
    (tmp_path / "a").chmod(0o755)
    assert tree_digest(tmp_path) != first
    assert inputs_digest({"b": 1, "a": 2}) == inputs_digest({"a": 2, "b": 1})


def test_unknown_kernel_and_broken_source_become_failed_cells(tmp_path: Path) -> None:
    source = _containerfile(tmp_path)
    broken = BrokenSource("gone", "gone has no dkms.conf")
    matrix = plan_matrix([source, broken], [K, "6.1.0-99-amd64"],
                         {K: TK, "6.1.0-99-amd64": "kernel 6.1.0-99-amd64 is not in the archive"},
                         BASE, BuildOptions(DEFAULT_TEMPLATE))
    errors = {c.key: c.error for c in matrix.cells}
    assert errors == {"mod@6.1.0-56-amd64": None,
                      "mod@6.1.0-99-amd64": "kernel 6.1.0-99-amd64 is not in the archive",
                      "gone@6.1.0-56-amd64": "gone has no dkms.conf",
                      "gone@6.1.0-99-amd64": "gone has no dkms.conf"}


def test_colliding_image_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DtkError, match="would both be tagged"):
        plan_matrix([_containerfile(tmp_path)], [K, KRT], {K: TK, KRT: TK}, BASE,
                    BuildOptions("localhost/one:fixed"))
    with pytest.raises(DtkError, match="--mod-name"):
        plan_matrix([_containerfile(tmp_path), BrokenSource("b", "x")], [K], {K: TK}, BASE,
                    BuildOptions(DEFAULT_TEMPLATE, mod_name="same"))


def _pkg(name: str, *deps: str) -> DkmsPackage:
    return DkmsPackage(name, "1", Path("/src") / name, "sha256:" + name, deps, "test")


def test_build_depends_groups_packages_in_build_order() -> None:
    groups = group_by_depends([_pkg("user", "base"), _pkg("alone"), _pkg("base"),
                               _pkg("lonely", "not-here")])
    assert [(g.name, [p.name for p in g.packages]) for g in groups
            if isinstance(g, DkmsGroup)] == [("user", ["base", "user"]), ("alone", ["alone"]),
                                             ("lonely", ["lonely"])]
    lonely = next(g for g in groups if isinstance(g, DkmsGroup) and g.name == "lonely")
    assert lonely.notes == ("lonely: BUILD_DEPENDS names not-here, which is not built with it",)


def test_build_depends_cycle_is_a_broken_source() -> None:
    (group,) = group_by_depends([_pkg("a", "b"), _pkg("b", "a")])
    assert isinstance(group, BrokenSource)
    assert "cycle" in group.error


def test_dkms_cells_always_use_the_small_base() -> None:
    group = DkmsGroup("hello", (_pkg("hello"),))
    (cell,) = plan_matrix([group], [K], {K: TK}, BASE, BuildOptions(DEFAULT_TEMPLATE)).cells
    assert cell.base == BASE
    assert dict(cell.build_args)["KERNEL_FULL_VERSION"] == K


def test_standard_sibling() -> None:
    assert standard_sibling(KRT) == K
    assert standard_sibling("6.12.117+deb12-rt-amd64") == K612
    assert standard_sibling("5.14.0-427.18.1.el9_4.x86_64+rt") == "5.14.0-427.18.1.el9_4.x86_64"
    assert standard_sibling(K) is None
    assert standard_sibling("5.14.0-284.11.1.rt14.296.el9_2.x86_64") is None


@dataclass(frozen=True)
class _Toolkit:
    name: str
    image_id: str
    kernels: tuple[str, ...]


def test_rt_kernels_share_their_standard_siblings_toolkit() -> None:
    asked: list[str] = []

    def ensure(release: str) -> _Toolkit:
        asked.append(release)
        if release == K612:
            raise DtkError("toolkit build failed", hint="see the log")
        return _Toolkit(f"tk:{release}", "id-" + release, (release, KRT) if release == K else
                        (release,))

    def known(release: str) -> str | None:
        return None if release in (K, KRT, K612) else f"kernel {release} is unknown"

    result = resolve_toolkits([KRT, K, K612, "9.9.9-1-amd64"], known, ensure)
    assert asked == [K, K612]  # one toolkit for the standard and RT kernel
    assert result[KRT] == result[K] == ImageRef(f"tk:{K}", f"id-{K}")
    assert result[K612] == "toolkit build failed (hint: see the log)"
    assert result["9.9.9-1-amd64"] == "kernel 9.9.9-1-amd64 is unknown"


def test_package_depends_keeps_first_alternatives_without_dkms() -> None:
    field = ("bzip2, dkms (>= 2.1.0.0), libxtables-dev (>= 1.4.3) | iptables-dev, "
             "xtables-addons-dkms (>= 3.13), python3:any")
    assert package_depends(field) == ("bzip2", "libxtables-dev", "xtables-addons-dkms",
                                      "python3")


def test_extras_are_what_the_toolkit_lacks_and_replace_its_toolkit() -> None:
    pkg = DkmsPackage("west-chamber", "1", Path("/s"), "sha256:x", (), "test",
                      depends=("make", "libxtables-dev", "xtables-addons-dkms"))
    dep = DkmsPackage("xtables-addons", "3", Path("/x"), "sha256:y", (), "test")
    assert missing(DkmsGroup("west-chamber", (pkg,)), frozenset({"make"})) == (
        "libxtables-dev", "xtables-addons-dkms")
    # A dependency built in the same group is met by building it.
    assert missing(DkmsGroup("west-chamber", (dep, pkg)), frozenset({"make"})) == (
        "libxtables-dev",)
    extra = ImageRef("localhost/dtk-toolkit-extras:1", "sha256:ccc")
    group = DkmsGroup("west-chamber", (pkg,))
    plain = plan_matrix([group], [K], {K: TK}, BASE, BuildOptions(DEFAULT_TEMPLATE)).cells[0]
    (cell,) = plan_matrix([group], [K], {K: TK}, BASE, BuildOptions(DEFAULT_TEMPLATE),
                          extras={("west-chamber", K): extra}).cells
    assert cell.toolkit == extra
    assert cell.input_hash != plain.input_hash
    (failed,) = plan_matrix([group], [K], {K: TK}, BASE, BuildOptions(DEFAULT_TEMPLATE),
                            extras={("west-chamber", K): "apt failed"}).cells
    assert failed.error == "apt failed"


def test_an_extras_cell_is_keyed_by_the_layers_inputs_not_its_image_id() -> None:
    """Two machines build the same extras layer with different image ids (apt is not
    byte-reproducible): their cells must get one key, or no machine shares them.
    Every input still moves the key: the toolkit, the packages, the archive's versions."""
    pkg = DkmsPackage("jool", "4", Path("/s"), "sha256:x", (), "test", depends=("libxtables12",))
    group = DkmsGroup("jool", (pkg,))
    want = ("libxtables12",)
    closure = ("libc6=2.36-9", "libxtables12=1.8.9-2")
    key = extras_key(TK, want, closure)

    def cell_key(extra: ImageRef) -> str:
        return plan_matrix([group], [K], {K: TK}, BASE, BuildOptions(DEFAULT_TEMPLATE),
                           extras={("jool", K): extra}).cells[0].input_hash

    here = ImageRef("localhost/dtk-toolkit-extras:1", "sha256:aaa", content_key=key)
    there = ImageRef("localhost/dtk-toolkit-extras:1", "sha256:bbb", content_key=key)
    assert cell_key(here) == cell_key(there)
    assert key != extras_key(ImageRef(TK.name, "sha256:other"), want, closure)
    assert key != extras_key(TK, ("libxtables12", "pkg-config"), closure)
    assert key != extras_key(TK, want, ("libc6=2.36-9", "libxtables12=1.8.9-3"))
    assert cell_key(here) != cell_key(ImageRef(here.name, "sha256:aaa",
                                               content_key=extras_key(TK, want, ())))


def test_the_key_is_the_same_on_every_host_unless_secrets_are_in_it(tmp_path: Path) -> None:
    """Each host keys its secrets' digest with its own key (dtk.digest.keyed_digest);
    a cell without secrets must not carry that key, or no two machines would ever
    share a cache entry (a KMM Module's cells all carry labels)."""
    source = _containerfile(tmp_path)
    labels = (("kmm.node.kubernetes.io/module.name", "m"),)

    def key(host: bytes, secrets: tuple[BuildSecret, ...] = ()) -> str:
        options = BuildOptions(DEFAULT_TEMPLATE, labels=labels, secrets=secrets,
                               secrets_key=host)
        return plan_matrix([source], [K], {K: TK}, BASE, options).cells[0].input_hash

    assert key(b"host a") == key(b"host b")
    secret = (BuildSecret("tok", (("token", b"s3cret"),)),)
    assert key(b"host a", secret) != key(b"host b", secret)  # by design: keyed per host
    assert key(b"host a", secret) != key(b"host a")
