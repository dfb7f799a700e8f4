"""Planning (pure), image state with a fake lookup, rendering, and the plan/render CLI."""

from __future__ import annotations

import json
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from dtk.errors import DtkError
from dtk.kmm import state as image_state
from dtk.kmm.nodes import read_nodes
from dtk.kmm.render import pinned, render, render_in_cluster
from dtk.kmmapi import model as m
from dtk.kmmapi.authfile import authfile
from dtk.kmmapi.load import load_documents
from dtk.kmmapi.plan import SIGN_LABEL, find_mapping, plan, registry_toolkit
from tests.unit.kmm_support import MANIFESTS, NODES, container, dtk, minimal, write

STD = "6.1.0-56-amd64"
RT = "6.1.0-56-rt-amd64"
RHEL_RT = "5.14.0-427.18.1.el9_4.x86_64+rt"
TRIXIE = "6.12.57+deb13-amd64"
ARM = "6.1.0-56-arm64"
REG = "registry.example.com/drivers"


@pytest.fixture(scope="module")
def bundle() -> m.Bundle:
    return load_documents([MANIFESTS])


def _args(build: Any) -> list[tuple[str, str]]:
    return [(a.name, a.value) for a in build.build_args]


def test_mappings_images_and_unmatched(bundle: m.Bundle) -> None:
    p = plan(bundle.module(None), [STD, RT, RHEL_RT, TRIXIE, ARM, STD], bundle)
    assert [(k.kernel, k.mapping_index, k.matched_by, k.image) for k in p.kernels] == [
        (STD, 0, "literal", f"{REG}/kmm-ci:{STD}-literal"),
        (RT, 1, "regexp", f"{REG}/kmm-ci-rt:{RT}"),
        # KERNEL_FULL_VERSION is normalised in image names: '+' becomes '_'
        (RHEL_RT, 2, "regexp", f"{REG}/kmm-ci:5.14.0-427.18.1.el9_4.x86_64_rt"),
        (TRIXIE, 3, "regexp", f"{REG}/prebuilt:6.12"),
    ]
    assert p.unmatched == (ARM,)


def test_regexp_is_an_unanchored_re2_search() -> None:
    mappings = (m.KernelMapping(regexp=r"12\.57"), m.KernelMapping(literal=TRIXIE))
    assert find_mapping(mappings, TRIXIE) == (0, mappings[0])  # first match wins
    assert find_mapping((m.KernelMapping(literal="6.12.57"),), TRIXIE) is None  # exact only
    assert find_mapping((m.KernelMapping(regexp="^12"),), TRIXIE) is None


def test_merged_build_and_injected_args(bundle: m.Bundle) -> None:
    p = plan(bundle.module(None), [STD, RT], bundle)
    std, rt = p.kernels
    assert std.build is not None and rt.build is not None
    # KMM's own args override the user's KERNEL_VERSION=wrong in place, the others are
    # appended sorted by name (ApplyBuildArgOverrides); DTK_AUTO only because the
    # container's Dockerfile mentions it.
    assert _args(std.build) == [
        ("KERNEL_VERSION", STD), ("VENDOR", "acme"),
        ("DTK_AUTO", f"localhost/driver-toolkit:{STD}"), ("KERNEL_FULL_VERSION", STD),
        ("MOD_NAME", "kmm-ci"), ("MOD_NAMESPACE", "drivers")]
    assert std.build.dockerfile_configmap == "kmm-ci-dockerfile"
    assert std.build.secrets == ("git-token",)
    assert rt.build.dockerfile_configmap == "kmm-ci-dockerfile-rt"  # replaced by the mapping
    assert _args(rt.build) == [
        ("KERNEL_VERSION", RT), ("VENDOR", "acme-rt"), ("RT", "1"), ("KERNEL_FULL_VERSION", RT),
        ("MOD_NAME", "kmm-ci"), ("MOD_NAMESPACE", "drivers")]
    assert rt.build.secrets == ("git-token", "rt-token")  # appended
    assert dict(rt.build.selector) == {}  # no build selector: the Module's is not used


def test_raw_kernel_in_build_args_normalised_in_names(bundle: m.Bundle) -> None:
    (kp,) = plan(bundle.module(None), [RHEL_RT], bundle).kernels
    assert kp.build is not None and kp.sign is not None
    assert ("KERNEL_FULL_VERSION", RHEL_RT) in _args(kp.build)
    assert ("DTK_AUTO", "localhost/driver-toolkit:5.14.0-427.18.1.el9_4.x86_64_rt") in \
        _args(kp.build)
    assert kp.sign.files_to_sign == (
        "/opt/lib/modules/5.14.0-427.18.1.el9_4.x86_64_rt/kmm_ci_a.ko",)


def test_merged_sign_tls_and_in_tree(bundle: m.Bundle) -> None:
    std, rt = plan(bundle.module(None), [STD, RT], bundle).kernels
    assert rt.sign is not None and std.sign is not None
    assert rt.sign.files_to_sign == (f"/opt/lib/modules/{RT}/kmm_ci_a.ko",
                                     f"/opt/lib/modules/{RT}/kmm_ci_b.ko")
    # Built to KMM's intermediate name, then signed to containerImage.
    assert rt.sign.unsigned_image == rt.build_image == f"{rt.image}_drivers_kmm-ci_kmm_unsigned"
    assert (rt.sign.key_secret, rt.sign.cert_secret) == ("signing-key", "signing-cert")
    assert rt.registry_tls == m.TLSOptions(insecure_skip_tls_verify=True)
    assert std.registry_tls == m.TLSOptions()
    assert rt.in_tree_modules_to_remove == ("kmm_ci_old",)


def test_sign_only_substitutes_kernel_variables_only(tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["sign"] = {
        "keySecret": {"name": "k"}, "certSecret": {"name": "c"},
        "unsignedImage": "r.example/${MOD_NAME}:${KERNEL_X}.${KERNEL_Y}-$KERNEL_FULL_VERSION",
        "filesToSign": ["/opt/lib/modules/${KERNEL_FULL_VERSION}/hello.ko"]}
    secrets = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n},
                "stringData": {key: "x"}} for n, key in (("k", "key"), ("c", "cert"))]
    b = load_documents([write(tmp_path, doc, *secrets)])
    (kp,) = plan(b.module(None), [STD], b).kernels
    assert kp.build is None and kp.sign is not None
    assert kp.sign.unsigned_image == f"r.example/:6.1-{STD}"  # no MOD_NAME in unsignedImage
    assert kp.image == f"registry.example.com/hello:{STD}"


def test_nodes_filtered_by_selector(bundle: m.Bundle) -> None:
    mod = bundle.module(None)
    nodes = read_nodes(NODES, mod.selector or {})
    assert nodes == {STD: ("worker-a", "worker-c"), RT: ("worker-b",), RHEL_RT: ("rhel-1",),
                     ARM: ("arm-1",)}  # 'other' (kmm-ci=false) is not selected
    p = plan(mod, list(nodes), bundle, nodes=nodes)
    assert p.kernels[0].nodes == ("worker-a", "worker-c")
    assert dict(p.unmatched_nodes) == {ARM: ("arm-1",)}


def _found(digests: dict[str, str],
           labels: dict[str, str] | None = None) -> image_state.Lookup:
    def lookup(image: str, tls: m.TLSOptions) -> image_state.Found | None:
        del tls
        if image == "boom":
            raise DtkError("registry unreachable")
        return image_state.Found(digests[image], "registry", labels or {}) \
            if image in digests else None
    return lookup


def test_states(bundle: m.Bundle, tmp_path: Path) -> None:
    p = plan(bundle.module(None), [STD, TRIXIE], bundle)
    std = p.kernels[0]
    assert std.sign is not None
    existing = {f"{REG}/kmm-ci:{STD}-literal": "sha256:aa"}
    got = image_state.states(p, _found(existing, {SIGN_LABEL: std.sign.digest}))
    assert [(s.kernel, s.state) for s in got] == [
        (STD, image_state.ImageState.EXISTS), (TRIXIE, image_state.ImageState.NEEDS_BUILDING)]
    # Made without this sign spec (or for another generation): made again, as build does.
    (stale, _) = image_state.states(p, _found(existing))
    assert stale.state is image_state.ImageState.NEEDS_BUILDING and stale.found is not None
    (old, _) = image_state.states(p, _found(existing, {SIGN_LABEL: std.sign.digest}), 2)
    assert old.state is image_state.ImageState.NEEDS_BUILDING
    # What render pins: the same rule; an image the Module cannot make is always used.
    foreign = image_state.Found("sha256:aa", "registry")
    assert not image_state.usable(std, foreign, None)
    prebuilt = replace(std, build=None, sign=None)
    assert image_state.usable(prebuilt, foreign, 2)
    doc = minimal()
    b = load_documents([write(tmp_path, doc)])
    (missing,) = image_state.states(plan(b.module(None), [STD], b), _found({}))
    assert missing.state is None
    assert missing.error == (f"image registry.example.com/hello:{STD} does not exist and the "
                             "Module has no build or sign for this kernel: KMM's pull pod "
                             "keeps waiting for it")


def test_needs_signing(bundle: m.Bundle) -> None:
    kp = plan(bundle.module(None), [STD], bundle).kernels[0]
    signing_only = image_state.state_of(
        type(kp)(**{**kp.__dict__, "build": None}), _found({}))
    assert signing_only.state is image_state.ImageState.NEEDS_SIGNING
    broken = image_state.state_of(type(kp)(**{**kp.__dict__, "image": "boom"}), _found({}))
    assert (broken.state, broken.error) == (None, "registry unreachable")


def test_sign_without_an_image_to_sign_fails_as_kmm_does(tmp_path: Path) -> None:
    """A sign section without unsignedImage and no build: KMM admits the Module, then
    its sign pod cannot be made ("no image to sign given", makeSignTemplate). An image
    that already exists is used, as KMM never signs then."""
    doc = minimal()
    container(doc)["sign"] = {"keySecret": {"name": "k"}, "certSecret": {"name": "c"},
                              "filesToSign": ["/opt/lib/modules/*/hello.ko"]}
    secrets = [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n},
                "stringData": {key: "x"}} for n, key in (("k", "key"), ("c", "cert"))]
    b = load_documents([write(tmp_path, doc, *secrets)])
    (missing,) = image_state.states(plan(b.module(None), [STD], b), _found({}))
    assert missing.state is None
    assert missing.error is not None and missing.error.startswith(
        "cannot sign: no image to sign given (the sign section has no unsignedImage and "
        "there is no build)"), missing.error


def test_authfile_is_private_and_removed(bundle: m.Bundle) -> None:
    secret = bundle.secret("drivers", "registry-auth")
    with authfile(secret) as path:
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert json.loads(path.read_text())["auths"]["registry.example.com"]
    assert not path.exists()


@pytest.mark.parametrize(("image", "expected"), [
    ("r.example:5000/a/b:1.0", "r.example:5000/a/b@sha256:cc"),
    ("r.example:5000/a/b", "r.example:5000/a/b@sha256:cc"),
    ("r.example/b:1@sha256:00", "r.example/b@sha256:cc"),
])
def test_pinned(image: str, expected: str) -> None:
    assert pinned(image, "sha256:cc") == expected


def test_render_pins_and_drops_build_and_sign(bundle: m.Bundle) -> None:
    mod = bundle.module(None)
    p = plan(mod, [STD, RT], bundle)
    doc = render(mod, p, {STD: "sha256:aa", RT: "sha256:bb"})
    cont = doc["spec"]["moduleLoader"]["container"]
    assert "build" not in cont and "sign" not in cont
    assert cont["kernelMappings"] == [
        {"literal": STD, "containerImage": f"{REG}/kmm-ci@sha256:aa"},
        {"literal": RT, "containerImage": f"{REG}/kmm-ci-rt@sha256:bb",
         "registryTLS": {"insecureSkipTLSVerify": True}}]
    assert cont["modprobe"]["modulesLoadingOrder"] == ["kmm_ci_a", "kmm_ci_b"]
    assert doc["spec"]["tolerations"] == mod.raw["spec"]["tolerations"]
    assert "build" in mod.raw["spec"]["moduleLoader"]["container"]  # input left alone
    with pytest.raises(DtkError, match=r"no image for 6\.1\.0-56-rt-amd64") as err:
        render(mod, p, {STD: "sha256:aa"})
    assert err.value.hint is not None and "dtk module build" in err.value.hint


def test_render_in_cluster_build(bundle: m.Bundle) -> None:
    mod = bundle.module(None)
    toolkit = registry_toolkit("127.0.0.1:5000/tk/")
    doc = render_in_cluster(mod, plan(mod, [RHEL_RT, RT], bundle, toolkit=toolkit), toolkit)
    cont = doc["spec"]["moduleLoader"]["container"]
    assert "build" in cont and "sign" in cont
    rhel, rt = cont["kernelMappings"]
    assert rhel == {"literal": RHEL_RT,
                    "containerImage": f"{REG}/kmm-ci:5.14.0-427.18.1.el9_4.x86_64_rt",
                    "build": {"dockerfileConfigMap": {"name": "kmm-ci-dockerfile"},
                              "buildArgs": [{"name": "DTK_AUTO", "value":
                                             "127.0.0.1:5000/tk/driver-toolkit:"
                                             "5.14.0-427.18.1.el9_4.x86_64_rt"}]}}
    assert rt["build"] == mod.raw["spec"]["moduleLoader"]["container"]["kernelMappings"][1][
        "build"]  # its Dockerfile does not use DTK_AUTO


def test_plan_cli_needs_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = dtk(monkeypatch, "module", "plan", "-f", str(MANIFESTS), "--no-state")
    assert code == 2
    assert text.startswith("error: no kernel given")


def test_render_cli_in_cluster_needs_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = dtk(monkeypatch, "module", "render", "-f", str(MANIFESTS), "--kernel", STD,
                     "--in-cluster-build")
    assert code == 2
    assert text.startswith("error: --in-cluster-build needs --toolkit-registry REG")


def test_merge_keeps_what_only_the_container_decides(tmp_path: Path) -> None:
    """KMM's getRelevantBuild/getRelevantSign (kernelmapper.go): with both sections, a
    mapping changes only the ConfigMap, build args, secrets, unsignedImage, key, cert
    and filesToSign; TLS options, kanikoParams and the build selector stay the
    container's. Unused arg overrides are appended sorted by name."""
    doc = minimal()
    c = container(doc)
    c["build"] = {"dockerfileConfigMap": {"name": "df"},
                  "buildArgs": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
                  "secrets": [{"name": "s1"}], "baseImageRegistryTLS": {"insecure": True},
                  "kanikoParams": {"tag": "debug"}, "selector": {"a": "b"}}
    c["sign"] = {"keySecret": {"name": "k"}, "certSecret": {"name": "c"},
                 "unsignedImageRegistryTLS": {"insecure": True},
                 "filesToSign": ["/opt/lib/modules/${KERNEL_FULL_VERSION}/a.ko"]}
    c["kernelMappings"][0]["build"] = {
        "dockerfileConfigMap": {"name": "df2"},
        "buildArgs": [{"name": "Z", "value": "3"}, {"name": "X", "value": "9"},
                      {"name": "A", "value": "0"}],
        "secrets": [{"name": "s2"}], "baseImageRegistryTLS": {"insecureSkipTLSVerify": True},
        "kanikoParams": {"tag": "other"}, "selector": {"c": "d"}}
    c["kernelMappings"][0]["sign"] = {
        "keySecret": {"name": "k2"}, "certSecret": {"name": "c2"},
        "unsignedImageRegistryTLS": {"insecureSkipTLSVerify": True},
        "filesToSign": ["/opt/lib/modules/${KERNEL_FULL_VERSION}/b.ko"]}
    others = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n},
               "data": {"dockerfile": "FROM scratch\n"}} for n in ("df", "df2")]
    others += [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n},
                "stringData": {key: "x"}}
               for n, key in (("k", "key"), ("c", "cert"), ("k2", "key"), ("c2", "cert"),
                              ("s1", "t"), ("s2", "t"))]
    b = load_documents([write(tmp_path, doc, *others)])
    (kp,) = plan(b.module(None), [STD], b).kernels
    assert kp.build is not None and kp.sign is not None
    assert kp.build.dockerfile_configmap == "df2"
    assert _args(kp.build)[:4] == [("X", "9"), ("Y", "2"), ("A", "0"), ("Z", "3")]
    assert kp.build.secrets == ("s1", "s2")
    assert kp.build.base_image_registry_tls == m.TLSOptions(insecure=True)
    assert kp.build.kaniko_tag == "debug"
    assert dict(kp.build.selector) == {"a": "b"}
    assert (kp.sign.key_secret, kp.sign.cert_secret) == ("k2", "c2")
    assert kp.sign.unsigned_image_registry_tls == m.TLSOptions(insecure=True)
    assert kp.sign.files_to_sign == (f"/opt/lib/modules/{STD}/a.ko",
                                     f"/opt/lib/modules/{STD}/b.ko")


@pytest.mark.parametrize("selector", [None, {}])
def test_build_pods_get_the_build_selector_only(tmp_path: Path,
                                                selector: dict[str, str] | None) -> None:
    """KMM's buildSpec falls back to `mld.Selector` when the build has none, but every
    build now goes through the ModuleBuildSignConfig, whose createMLD
    (internal/controllers/mbsc_reconciler.go, de3f8c9) sets no Selector: a build pod
    without a build selector may run on any node, whatever the Module's selector."""
    doc = minimal()
    container(doc)["build"] = {"dockerfileConfigMap": {"name": "df"}}
    if selector is not None:
        container(doc)["build"]["selector"] = selector
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "df"},
          "data": {"dockerfile": "FROM scratch\n"}}
    b = load_documents([write(tmp_path, doc, cm)])
    (kp, _) = plan(b.module(None), [STD, TRIXIE], b).kernels
    assert doc["spec"]["selector"]
    assert kp.build is not None and dict(kp.build.selector) == {}


@pytest.mark.parametrize(("cont", "mapping", "expected"), [
    ({"inTreeModulesToRemove": ["a"]}, {"inTreeModulesToRemove": []}, ()),  # [] is none
    ({"inTreeModulesToRemove": ["a"]}, {}, ("a",)),
    ({"inTreeModulesToRemove": ["a"]}, {"inTreeModulesToRemove": ["b"]}, ("b",)),
    ({"inTreeModuleToRemove": "a"}, {"inTreeModuleToRemove": "b"}, ("b",)),
    ({"inTreeModuleToRemove": "a"}, {}, ("a",)),
])
def test_in_tree_modules_to_remove_as_kmm_merges_them(
        tmp_path: Path, cont: dict[str, Any], mapping: dict[str, Any],
        expected: tuple[str, ...]) -> None:
    doc = minimal()
    container(doc).update(cont)
    container(doc)["kernelMappings"][0].update(mapping)
    b = load_documents([write(tmp_path, doc)])
    (kp,) = plan(b.module(None), [STD], b).kernels
    assert kp.in_tree_modules_to_remove == expected


def test_kmm_pod_names_per_kernel(bundle: m.Bundle) -> None:
    """KMM 177350a names a kernel's build and sign pods `<module>-{build,sign}-<kernel>`,
    the kernel DNS-safe (DNSSafeKernelVersion: lower case, '_' '.' '+' as '-')."""
    from dtk.kmmapi.plan import resource_name, to_json  # noqa: PLC0415
    assert resource_name("kmm-ci", "build", "6.12.57+deb13-amd64") == \
        "kmm-ci-build-6-12-57-deb13-amd64"
    assert resource_name("m", "sign", "5.14.0-427.el9_4.x86_64+rt") == \
        "m-sign-5-14-0-427-el9-4-x86-64-rt"
    (k,) = to_json(plan(bundle.module(None), [STD], bundle))["kernels"]
    assert (k["kmmBuildPod"], k["kmmSignPod"]) == ("kmm-ci-build-6-1-0-56-amd64",
                                                    "kmm-ci-sign-6-1-0-56-amd64")
