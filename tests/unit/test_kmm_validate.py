"""KMM's webhook and CRD rules, one test per rule, through `dtk module validate`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.unit.kmm_support import MANIFESTS, container, dtk, minimal, rejected, write

C = "spec.moduleLoader.container"
KM0 = f"{C}.kernelMappings[0]"


def check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, doc: dict[str, Any],
          expected: str) -> str:
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert f"Module default/{doc['metadata']['name']} (" in text
    assert expected in text, text
    return text


def test_the_example_module_is_admitted(monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(MANIFESTS))
    assert code == 0, text
    assert text == ("Module drivers/kmm-ci: valid (4 kernelMapping(s), 2 ConfigMap(s), "
                    "5 Secret(s))\n")


def test_minimal_module_is_admitted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(write(tmp_path, minimal())))
    assert (code, text) == (0, "Module default/hello: valid (2 kernelMapping(s), "
                                "0 ConfigMap(s), 0 Secret(s))\n")


@pytest.mark.parametrize("version", ["v1", None])
def test_name_and_namespace_too_long(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     version: str | None) -> None:
    """KMM's validateModule checks len(name+namespace) <= maxCombinedLength (41) first,
    for every Module, whether or not version is set (its message says otherwise)."""
    doc = minimal()
    doc["metadata"]["name"] = "h" * 35  # + "default" = 42
    if version:
        container(doc)["version"] = version
    text = check(monkeypatch, tmp_path, doc, "metadata.name: name and namespace are 42 "
                 "characters together; at most 41")
    assert "Module default/" + "h" * 35 in text


def test_name_and_namespace_of_41_pass(monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    doc = minimal()
    doc["metadata"]["name"] = "h" * 34
    code, _ = dtk(monkeypatch, "module", "validate", "-f", str(write(tmp_path, doc)))
    assert code == 0


def test_literal_and_regexp_are_exclusive(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["kernelMappings"][0]["regexp"] = ".*"
    check(monkeypatch, tmp_path, doc, f"{KM0}: literal and regexp are mutually exclusive")


def test_literal_or_regexp_is_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    del container(doc)["kernelMappings"][0]["literal"]
    check(monkeypatch, tmp_path, doc, f"{KM0}: one of literal or regexp is required")


@pytest.mark.parametrize(("pattern", "reason"), [
    (r"(a)\1", r"invalid escape sequence: \1"),
    (r"6\.1(?=\.0)", "invalid perl operator: (?="),
])
def test_regexp_must_compile_with_re2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                      pattern: str, reason: str) -> None:
    re.compile(pattern)  # Python accepts it: the rule is Go's RE2, not Python's re
    doc = minimal()
    container(doc)["kernelMappings"][1]["regexp"] = pattern
    text = check(monkeypatch, tmp_path, doc, f"{C}.kernelMappings[1].regexp: {pattern!r} "
                 f"is not a valid Go (RE2) regexp: {reason}")
    assert "re2.cc" not in text  # RE2's own log line is silenced


def test_mapping_image_needs_tag_or_digest(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["kernelMappings"][0]["containerImage"] = "registry.example.com/hello"
    check(monkeypatch, tmp_path, doc, f"{KM0}.containerImage: image "
          "'registry.example.com/hello' must set a tag or a digest")


def test_container_image_needs_tag_or_digest(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["containerImage"] = "quay.io/acme/hello"
    check(monkeypatch, tmp_path, doc, f"{C}.containerImage: image 'quay.io/acme/hello'")


def test_digest_and_registry_port_pass_as_in_kmm(monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["kernelMappings"][0]["containerImage"] = "r.example/h@sha256:" + "a" * 64
    container(doc)["kernelMappings"][1]["containerImage"] = "r.example:5000/hello"
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(write(tmp_path, doc)))
    assert code == 0, text


def test_container_image_required_without_container_default(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["kernelMappings"][0]["containerImage"] = ""
    check(monkeypatch, tmp_path, doc, f"{KM0}.containerImage: required unless {C}."
          "containerImage is set")


def test_mapping_container_image_key_is_required_by_the_crd(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CRD lists kernelMappings[].containerImage as required (json tag without
    omitempty): the API server refuses a mapping without the key even when the container
    sets a default image; "" passes it (the webhook then takes the container's)."""
    doc = minimal()
    del container(doc)["kernelMappings"][0]["containerImage"]
    container(doc)["containerImage"] = "registry.example.com/hello:${KERNEL_FULL_VERSION}"
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert f"{KM0}.containerImage: required field is missing" in text
    assert "hint: the API server refuses the fields named above" in text


def test_build_arg_value_key_is_required_by_the_crd(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CRD's BuildArg requires both name and value (json tags without omitempty):
    `value: ""` is admitted, a missing value is refused by the API server."""
    doc = minimal()
    container(doc)["build"] = {"dockerfileConfigMap": {"name": "build"},
                               "buildArgs": [{"name": "EMPTY", "value": ""}, {"name": "NONE"}]}
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert f"{C}.build.buildArgs[1].value: required field is missing" in text
    assert "buildArgs[0]" not in text


def test_an_unknown_pull_policy_is_admitted_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The Module CRD types imagePullPolicy as a plain string (no enum) and KMM's webhook
    does not look at it: the cluster admits `Sometimes`, and refuses only the pods KMM
    then makes with it. So dtk admits it, and warns."""
    doc = minimal()
    container(doc)["imagePullPolicy"] = "Sometimes"
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(write(tmp_path, doc)))
    assert code == 0, text
    assert "warning: Module default/hello" in text
    assert f"{C}.imagePullPolicy 'Sometimes': the API server admits it" in text
    assert "refuses the pods KMM makes from it (Always, IfNotPresent or Never)" in text


def test_container_default_image_satisfies_mappings(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["kernelMappings"][0]["containerImage"] = ""
    container(doc)["containerImage"] = "registry.example.com/hello:${KERNEL_FULL_VERSION}"
    code, _ = dtk(monkeypatch, "module", "validate", "-f", str(write(tmp_path, doc)))
    assert code == 0


def test_kernel_mappings_min_items(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["kernelMappings"] = []
    check(monkeypatch, tmp_path, doc, f"{C}.kernelMappings: at least one mapping is required")


def test_in_tree_single_and_list_not_mixed_in_container(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    doc = minimal()
    container(doc).update(inTreeModuleToRemove="a", inTreeModulesToRemove=["b"])
    check(monkeypatch, tmp_path, doc, f"{C}.inTreeModuleToRemove: cannot be set together")


def test_in_tree_single_and_list_not_mixed_in_mapping(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["kernelMappings"][0].update(inTreeModuleToRemove="a",
                                                inTreeModulesToRemove=["b"])
    check(monkeypatch, tmp_path, doc, f"{KM0}.inTreeModuleToRemove: cannot be set together")


def test_in_tree_not_mixed_between_mapping_and_container(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["inTreeModuleToRemove"] = "a"
    container(doc)["kernelMappings"][0]["inTreeModulesToRemove"] = ["b"]
    check(monkeypatch, tmp_path, doc, f"{KM0}: inTreeModuleToRemove and inTreeModulesToRemove "
          "cannot be mixed between the mapping and the container")


def test_raw_args_not_with_module_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["modprobe"]["rawArgs"] = {"load": ["-v", "hello"], "unload": ["-r", "hello"]}
    check(monkeypatch, tmp_path, doc, f"{C}.modprobe.rawArgs: cannot be set when moduleName")


def test_module_name_optional_only_with_both_raw_args(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["modprobe"] = {"rawArgs": {"load": ["hello"]}}
    check(monkeypatch, tmp_path, doc, f"{C}.modprobe.moduleName: required unless both "
          "rawArgs.load and rawArgs.unload are set")


def test_raw_args_alone_are_enough(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["modprobe"] = {"rawArgs": {"load": ["hello"], "unload": ["-r", "hello"]}}
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(write(tmp_path, doc)))
    assert code == 0, text


@pytest.mark.parametrize("field", ["load", "unload"])
def test_args_min_items(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, field: str) -> None:
    doc = minimal()
    container(doc)["modprobe"]["args"] = {field: []}
    check(monkeypatch, tmp_path, doc, f"{C}.modprobe.args.{field}: must have at least one item")


def test_loading_order_starts_with_module_name(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["modprobe"]["modulesLoadingOrder"] = ["dep", "hello"]
    check(monkeypatch, tmp_path, doc, f"{C}.modprobe.modulesLoadingOrder[0]: must be moduleName "
          "'hello', got 'dep'")


def test_loading_order_needs_two(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["modprobe"]["modulesLoadingOrder"] = ["hello"]
    check(monkeypatch, tmp_path, doc, f"{C}.modprobe.modulesLoadingOrder: needs at least two")


def test_loading_order_no_duplicates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["modprobe"]["modulesLoadingOrder"] = ["hello", "dep", "dep"]
    check(monkeypatch, tmp_path, doc, f"{C}.modprobe.modulesLoadingOrder[2]: 'dep' is listed "
          "twice")


def _signed(doc: dict[str, Any], files: list[str], **extra: Any) -> dict[str, Any]:
    container(doc)["sign"] = {"keySecret": {"name": "k"}, "certSecret": {"name": "c"},
                              "filesToSign": files, **extra}
    return doc


def _sign_secrets() -> list[dict[str, Any]]:
    return [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n},
             "stringData": {key: "x"}} for n, key in (("k", "key"), ("c", "cert"))]


def test_files_to_sign_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = _signed(minimal(), [], unsignedImage="r.example/u:${KERNEL_FULL_VERSION}")
    text = rejected(monkeypatch, write(tmp_path, doc, *_sign_secrets()))
    assert f"{C}.sign.filesToSign: required (at least one path) when sign is set" in text
    assert text.count("filesToSign") == 1  # reported once, not once per mapping


def test_files_to_sign_under_dir_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = _signed(minimal(), ["/opt/lib/modules/${KERNEL_FULL_VERSION}/*.ko", "/usr/lib/x.ko",
                              "lib/y.ko", "/optional/z.ko"], unsignedImage="r.example/u:1")
    text = rejected(monkeypatch, write(tmp_path, doc, *_sign_secrets()))
    assert "filesToSign[0]" not in text
    for n, bad in ((1, "/usr/lib/x.ko"), (2, "lib/y.ko"), (3, "/optional/z.ko")):
        assert (f"{C}.sign.filesToSign[{n}]: {bad!r} must be an absolute path or glob under "
                "dirName /opt") in text


def test_sign_without_unsigned_image_or_build_is_admitted(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    """KMM admits it: the CRD leaves `unsignedImage` optional ("required otherwise" is
    only its description) and the webhook's validateSignSection checks filesToSign
    alone. KMM fails later, when it makes the sign pod ("no image to sign given",
    internal/buildsign/resource/common.go); `plan` and `build` fail there too."""
    doc = _signed(minimal(), ["/opt/lib/modules/*/hello.ko"])
    code, text = dtk(monkeypatch, "module", "validate", "-f",
                     str(write(tmp_path, doc, *_sign_secrets())))
    assert (code, text) == (0, "Module default/hello: valid (2 kernelMapping(s), "
                                "0 ConfigMap(s), 2 Secret(s))\n")


def test_device_plugin_and_dra_exclusive(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    doc = minimal()
    doc["spec"]["devicePlugin"] = {"container": {"image": "r.example/dp:1"}}
    doc["spec"]["dra"] = {"driverName": "gpu.example.com", "container": {"image": "r.example/d:1"}}
    check(monkeypatch, tmp_path, doc, "spec: devicePlugin and dra are mutually exclusive")


def test_selector_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    del doc["spec"]["selector"]
    check(monkeypatch, tmp_path, doc, "spec.selector: required")


def test_dra_host_path_volumes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    doc["spec"]["dra"] = {"driverName": "gpu.example.com",
                          "container": {"image": "r.example/d:1"},
                          "volumes": [{"name": "dev", "hostPath": {"path": "/dev/dri"}},
                                      {"name": "etc", "hostPath": {"path": "/etc/shadow"}},
                                      {"name": "trick", "hostPath": {"path": "/devil"}}]}
    text = check(monkeypatch, tmp_path, doc, "spec.dra.volumes[1].hostPath.path: '/etc/shadow' "
                 "is not under /dev, /sys, /var, /opt, /run")
    assert "spec.dra.volumes[2].hostPath.path: '/devil'" in text
    assert "volumes[0]" not in text


@pytest.mark.parametrize(("toleration", "expected"), [
    ({"operator": "Equal", "value": "x"}, "spec.tolerations[0].operator: must be 'Exists' when "
     "key is empty"),
    ({"key": "k", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5},
     "spec.tolerations[0].effect: must be 'NoExecute' when tolerationSeconds is set"),
    ({"key": "k", "operator": "Exists", "value": "v"},
     "spec.tolerations[0].value: must be empty when operator is 'Exists'"),
    ({"key": "k", "operator": "In"}, "spec.tolerations[0].operator: 'In': must be 'Equal' or "
     "'Exists'"),
    ({"key": "k", "operator": "Exists", "effect": "NoRun"},
     "spec.tolerations[0].effect: 'NoRun': must be one of NoSchedule, PreferNoSchedule, "
     "NoExecute"),
    ({"key": "bad key!", "operator": "Exists"}, "spec.tolerations[0].key: 'bad key!' is not a "
     "qualified name"),
    ({"key": "k", "value": "not a label value"}, "spec.tolerations[0].value: 'not a label value' "
     "is not a valid label value"),
])
def test_toleration_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                          toleration: dict[str, Any], expected: str) -> None:
    doc = minimal()
    doc["spec"]["tolerations"] = [toleration]
    check(monkeypatch, tmp_path, doc, expected)


def test_every_violation_is_listed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    del doc["spec"]["selector"]
    container(doc)["kernelMappings"][0]["regexp"] = "(?=x)"
    container(doc)["modprobe"]["modulesLoadingOrder"] = ["x"]
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert text.splitlines()[0] == "error: KMM would reject 5 field(s):"
    assert [line.split(": ", 1)[1].split(":", 1)[0] for line in text.splitlines()[1:6]] == [
        "spec.selector", f"{C}.modprobe.modulesLoadingOrder",
        f"{C}.modprobe.modulesLoadingOrder[0]", KM0, f"{KM0}.regexp"]


def test_files_to_sign_checked_per_section(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """KMM's validateFilesToSign checks the container's sign and each mapping's sign on
    its own: a mapping section without filesToSign is refused even when the container's
    has some (the merged list would not be empty)."""
    doc = _signed(minimal(), ["/opt/lib/modules/${KERNEL_FULL_VERSION}/a.ko"],
                  unsignedImage="r.example/u:1")
    container(doc)["kernelMappings"][0]["sign"] = {"keySecret": {"name": "k"},
                                                   "certSecret": {"name": "c"}}
    text = rejected(monkeypatch, write(tmp_path, doc, *_sign_secrets()))
    assert f"{KM0}.sign.filesToSign: required (at least one path) when sign is set" in text
    assert f"{C}.sign.filesToSign" not in text


def test_files_to_sign_prefix_is_kmms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """strings.HasPrefix(path, dirName+"/"): KMM admits what starts with it, as it is."""
    doc = _signed(minimal(), ["/opt/../opt/lib/modules/x.ko", "/opt//lib/x.ko"],
                  unsignedImage="r.example/u:1")
    code, text = dtk(monkeypatch, "module", "validate", "-f",
                     str(write(tmp_path, doc, *_sign_secrets())))
    assert code == 0, text


def test_admission_and_missing_references_in_one_pass(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    doc = minimal()
    container(doc)["kernelMappings"][0]["regexp"] = ".*"
    container(doc)["build"] = {"dockerfileConfigMap": {"name": "missing-cm"}}
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert "ConfigMap default/missing-cm is not among the documents given" in text
    assert f"{KM0}: literal and regexp are mutually exclusive" in text


def test_dra_device_classes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    doc = minimal()
    doc["spec"]["dra"] = {"driverName": "gpu.example.com", "container": {"image": "r/d:1"},
                          "deviceClasses": [{"name": "a"}, {"name": "Bad_Name"}, {"name": "a"},
                                            {"name": "b", "selectors": [{}] * 33}]}
    text = check(monkeypatch, tmp_path, doc, "spec.dra.deviceClasses[1].name: 'Bad_Name' is "
                 "not a DNS subdomain")
    assert "spec.dra.deviceClasses[2].name: 'a' is a duplicate" in text
    assert "spec.dra.deviceClasses[3].selectors: must have at most 32 items, has 33" in text
    doc["spec"]["dra"]["deviceClasses"] = [{}]
    text = rejected(monkeypatch, write(tmp_path, doc))
    assert "spec.dra.deviceClasses[0].name: required field is missing" in text  # the CRD's


@pytest.mark.parametrize(("path", "resolved"), [
    ("/dev/../etc/shadow", "/etc/shadow"), ("/devious", None), ("//etc", "/etc"),
    ("dev/x", None), ("/sys/../../etc", "/etc"), ("/opt/..", "/")])
def test_host_path_rule_cleans_the_path_as_go_does(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, path: str, resolved: str | None) -> None:
    """KMM's isAllowedHostPath runs filepath.Clean first (KMM 29c905a's own cases:
    /dev/../etc/shadow and /devious); a prefix test on the raw string let
    /dev/../etc/shadow through."""
    doc = minimal()
    doc["spec"]["devicePlugin"] = {"container": {"image": "r.example/dp:1"},
                                   "volumes": [{"name": "x", "hostPath": {"path": path}}]}
    shown = f" (it resolves to {resolved!r})" if resolved else ""
    check(monkeypatch, tmp_path, doc, f"spec.devicePlugin.volumes[0].hostPath.path: {path!r}"
          f"{shown} is not under /dev, /sys, /var, /opt, /run")


@pytest.mark.parametrize("path", ["/sys//class//net", "/run/cdi", "/var/lib/kubelet/plugins",
                                  "/dev", "/opt/x/../y"])
def test_host_paths_kmm_allows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                               path: str) -> None:
    doc = minimal()
    doc["spec"]["devicePlugin"] = {"container": {"image": "r.example/dp:1"},
                                   "volumes": [{"name": "x", "hostPath": {"path": path}}]}
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(write(tmp_path, doc)))
    assert code == 0, text


@pytest.mark.parametrize(("version", "refused"), [
    ("1.33", True), ("v1.34.1", False), ("1.35", False), ("2.0", False), ("0.99", True),
    (None, False)])
def test_dra_kubernetes_version_gate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                     version: str | None, refused: bool) -> None:
    """KMM's validateDRA (36567c5): spec.dra needs Kubernetes 1.34; without a version
    (KMM's hub webhook, and dtk without --kube-version) the gate is skipped."""
    doc = minimal()
    doc["spec"]["dra"] = {"driverName": "gpu.example.com", "container": {"image": "r/d:1"}}
    args = ("--kube-version", version) if version else ()
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(write(tmp_path, doc)), *args)
    assert code == (2 if refused else 0), text
    if refused:
        assert "spec.dra: requires Kubernetes 1.34 or later; the cluster is" in text


def test_bad_kube_version_is_a_user_error(monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(write(tmp_path, minimal())),
                     "--kube-version", "latest")
    assert code == 2 and "--kube-version 'latest' is not a Kubernetes version" in text


def test_device_plugin_host_path_volumes(monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    doc = minimal()
    doc["spec"]["devicePlugin"] = {"container": {"image": "r.example/dp:1"},
                                   "volumes": [{"name": "x", "hostPath": {"path": "/etc"}}]}
    check(monkeypatch, tmp_path, doc, "spec.devicePlugin.volumes[0].hostPath.path: '/etc' "
          "is not under /dev, /sys, /var, /opt, /run")
