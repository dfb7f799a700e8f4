"""KMM's own admission test cases, through `dtk module validate`.

Transcribed from kubernetes-sigs/kernel-module-management
internal/webhook/module_test.go at de3f8c9 (2026-07-29): every `It` and `Entry` of it,
in its order, with KMM's verdict. KMM's tests call the webhook's functions on Go structs;
here each case is the Module a user would apply, which needs what the API server
requires and those tests leave out: a name, a namespace and a selector (added to every
case, and admitted by KMM). Go structs are written as the API server receives them:
fields without `omitempty` are present even when empty (`containerImage: ""`,
`literal: ""`), empty slices with `omitempty` are absent (`Load: []string{}`).

Where the API server (the CRD schema) refuses a Module the webhook function alone
admits, the case says so (`crd=True`): dtk refuses it, as `kubectl apply` would.
The update rule (version to or from empty) needs the Module as it is in the cluster:
`--previous FILE`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from tests.unit.kmm_support import dtk, write

API = "kmm.sigs.x-k8s.io/v1beta1"


class Case(NamedTuple):
    name: str
    spec: dict[str, Any]
    admitted: bool
    said: str = ""  # what dtk names for the rule KMM's test is about
    kube: str | None = "1.34"  # moduleWebhook's version (NewModuleValidator(…, 1.34))
    crd: bool = False  # refused by the CRD schema, not by the webhook function
    previous: dict[str, Any] | None = None  # the Module in the cluster (ValidateUpdate)
    meta: tuple[str, str] = ("m", "ns")


def _mapping(**fields: Any) -> dict[str, Any]:
    """A KernelMapping as Go serialises it: containerImage, literal and regexp have no
    omitempty, so they are always there."""
    return {"containerImage": "", "literal": "", "regexp": "", **fields}


def _loader(modprobe: dict[str, Any], mappings: list[dict[str, Any]] | None,
            **container: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"modprobe": modprobe, **container}
    body["kernelMappings"] = mappings if mappings is not None else []
    return {"moduleLoader": {"container": body}}


# validModule: modprobe moduleName mod-name, one mapping {valid-regexp, image-url:mytag}.
VALID = _loader({"moduleName": "mod-name"},
                [_mapping(regexp="valid-regexp", containerImage="image-url:mytag")])
C = "spec.moduleLoader.container"


def _with_container(**container: Any) -> dict[str, Any]:
    """validateModuleLoaderContainerSpec's cases, inside validModule's modprobe."""
    mappings = container.pop("kernelMappings", None)
    return _loader({"moduleName": "mod-name"}, mappings, **container)


def _with_modprobe(modprobe: dict[str, Any]) -> dict[str, Any]:
    """validateModprobe's cases, inside validModule's mappings."""
    return _loader(modprobe, copy.deepcopy(VALID["moduleLoader"]["container"]["kernelMappings"]))


def _in_tree(modules_c: bool, module_c: bool, modules_km: bool, module_km: bool
             ) -> dict[str, Any]:
    km = _mapping(containerImage="image-url")
    cont: dict[str, Any] = {}
    if modules_c:
        cont["inTreeModulesToRemove"] = ["some value"]
    if module_c:
        cont["inTreeModuleToRemove"] = "some value"
    if modules_km:
        km["inTreeModulesToRemove"] = ["some value"]
    if module_km:
        km["inTreeModuleToRemove"] = "some value"
    return _with_container(kernelMappings=[km], **cont)


def _tolerations(*items: dict[str, Any]) -> dict[str, Any]:
    return {**copy.deepcopy(VALID), "tolerations": list(items)}


def _dra(**changes: Any) -> dict[str, Any]:
    """validDRASpec: driverName example.com, container image driver:latest; no loader."""
    return {"dra": {"driverName": "example.com", "container": {"image": "driver:latest"},
                    **changes}}


def _volumes(*paths: str, where: str = "dra") -> dict[str, Any]:
    vols = [{"name": f"v{n}", "hostPath": {"path": p}} for n, p in enumerate(paths)]
    return _dra(volumes=vols) if where == "dra" else {
        "devicePlugin": {"container": {"image": "dp:1"}, "volumes": vols}}


def _versioned(version: str) -> dict[str, Any]:
    spec = copy.deepcopy(VALID)
    if version:
        spec["moduleLoader"]["container"]["version"] = version
    return spec


KM0 = f"{C}.kernelMappings[0]"
CASES = [
    # validateImageFormat
    Case("image without tag or digest", _with_container(kernelMappings=[
        _mapping(regexp="r", containerImage="image-ur")]), False, "must set a tag or a digest"),
    Case("image with a tag", _with_container(kernelMappings=[
        _mapping(regexp="r", containerImage="image-url:tag")]), True),
    Case("image with a digest", _with_container(kernelMappings=[
        _mapping(regexp="r", containerImage="image-url@sha256:xxxxxxxxxxxx")]), True),
    # validateModuleLoaderContainerSpec
    Case("no kernel mappings", _with_container(), False,
         f"{C}.kernelMappings: at least one mapping is required", crd=True),
    Case("container image without tag", _with_container(
        containerImage="image-url", kernelMappings=[_mapping(regexp="valid-regexp")]), False,
        f"{C}.containerImage: image 'image-url' must set a tag"),
    Case("valid regexps and images", _with_container(kernelMappings=[
        _mapping(regexp="valid-regexp", containerImage="image-url:mytag"),
        _mapping(regexp="^.*$", containerImage="image-url:mytag")]), True),
    Case("container image for a regexp", _with_container(
        containerImage="image-url:mytag", kernelMappings=[_mapping(regexp="valid-regexp")]), True),
    Case("container image for a literal", _with_container(
        containerImage="image-url:mytag", kernelMappings=[_mapping(literal="any-value")]), True),
    Case("invalid regexp", _with_container(kernelMappings=[_mapping(regexp="*-invalid-regexp")]),
         False, "is not a valid Go (RE2) regexp"),
    Case("literal and regexp", _with_container(kernelMappings=[
        _mapping(regexp="^valid-regexp$", literal="any-value")]), False,
        "literal and regexp are mutually exclusive"),
    Case("neither literal nor regexp", _with_container(kernelMappings=[
        _mapping(containerImage="image-url")]), False, "one of literal or regexp is required"),
    Case("no image at all", _with_container(kernelMappings=[_mapping(regexp="valid-regexp")]),
         False, f"{KM0}.containerImage: required unless"),
    Case("mapping image without tag", _with_container(kernelMappings=[
        _mapping(regexp="valid-regexp", containerImage="image-url")]), False,
        "must set a tag or a digest"),
    Case("in-tree list and single in the container", _in_tree(True, True, False, False), False,
         f"{C}.inTreeModuleToRemove: cannot be set together"),
    Case("in-tree list and single in the mapping", _in_tree(False, False, True, True), False,
         f"{KM0}.inTreeModuleToRemove: cannot be set together"),
    Case("in-tree list in the container, single in the mapping",
         _in_tree(True, False, False, True), False, "cannot be mixed between the mapping"),
    # KMM's entry name says "single in the container, list in the mapping", but its
    # arguments (true, false, true, false) set the list in both, which is no conflict:
    # KMM refuses it for the mapping's image ("image-url", no literal or regexp).
    Case("in-tree list in both (KMM's 4th entry)", _in_tree(True, False, True, False), False,
         "one of literal or regexp is required"),
    # validateModprobe
    Case("no moduleName and no rawArgs", _with_modprobe({}), False,
         f"{C}.modprobe.moduleName: required unless both rawArgs"),
    Case("rawArgs.load empty, no moduleName", _with_modprobe({"rawArgs": {"unload": ["arg"]}}),
         False, f"{C}.modprobe.moduleName: required unless both rawArgs"),
    Case("rawArgs and moduleName", _with_modprobe(
        {"moduleName": "mod-name", "rawArgs": {"load": ["arg"], "unload": ["arg"]}}), False,
        f"{C}.modprobe.rawArgs: cannot be set when moduleName is set"),
    Case("rawArgs.unload empty, no moduleName", _with_modprobe({"rawArgs": {"load": ["arg"]}}),
         False, f"{C}.modprobe.moduleName: required unless both rawArgs"),
    Case("rawArgs load and unload alone", _with_modprobe(
        {"rawArgs": {"load": ["arg"], "unload": ["arg"]}}), True),
    Case("moduleName alone", _with_modprobe({"moduleName": "module-name"}), True),
    Case("loading order of one", _with_modprobe(
        {"moduleName": "module-name", "modulesLoadingOrder": ["test"]}), False,
        "needs at least two modules"),
    Case("empty loading order, no moduleName", _with_modprobe({}), False,  # omitempty drops []
         f"{C}.modprobe.moduleName: required unless both rawArgs"),
    Case("loading order without moduleName", _with_modprobe(
        {"modulesLoadingOrder": ["test1", "test2"]}), False, "needs moduleName to be set"),
    Case("loading order with a duplicate", _with_modprobe(
        {"moduleName": "module-name", "modulesLoadingOrder": ["module-name", "test", "test"]}),
        False, "'test' is listed twice"),
    # validateModule
    Case("name and namespace not too long", VALID, True, meta=("name", "ns")),
    Case("name and namespace too long", VALID, False, "are 42 characters together",
         meta=("a" * 21, "a" * 21)),
    Case("no moduleLoader", {}, True),
    # ValidateCreate
    Case("ValidateCreate: valid", VALID, True),
    Case("ValidateCreate: invalid regexp", _loader({}, [_mapping(regexp="*-invalid-regexp")]),
         False, "is not a valid Go (RE2) regexp"),
    # ValidateUpdate
    Case("ValidateUpdate: moduleName to rawArgs", _loader(
        {"rawArgs": {"load": ["arg-1"], "unload": ["arg-1"]}}, [_mapping(regexp="valid-regexp")],
        containerImage="image-url:mytag"), True, previous=_loader(
        {"moduleName": "module-name"}, [_mapping(regexp="valid-regexp")],
        containerImage="image-url:mytag")),
    Case("ValidateUpdate: invalid regexp", _loader({}, [_mapping(regexp="*-invalid-regexp")]),
         False, "is not a valid Go (RE2) regexp", previous={}),
    Case("version v1 to empty", _versioned(""), False, "cannot update to or from an empty "
         "version", previous=_versioned("v1")),
    Case("version empty to v2", _versioned("v2"), False, "cannot update to or from an empty "
         "version", previous=_versioned("")),
    Case("version empty to empty", _versioned(""), True, previous=_versioned("")),
    Case("version v1 to v2", _versioned("v2"), True, previous=_versioned("v1")),
    # validateTolerations
    Case("toleration with an invalid effect", _tolerations(
        {"key": "Test-Key1", "operator": "Equal", "value": "Test-Value1",
         "effect": "PreferNoSchedule"},
        {"key": "Test-Key2", "operator": "Exists", "effect": "Invalid-Effect"}), False,
        "spec.tolerations[1].effect: 'Invalid-Effect'"),
    Case("toleration with an invalid operator", _tolerations(
        {"key": "Test-Key1", "operator": "Equal", "value": "Test-Value1",
         "effect": "PreferNoSchedule"},
        {"key": "Test-Key2", "operator": "Invalid-operator-value", "value": "Test-Value2",
         "effect": "NoExecute"}), False, "spec.tolerations[1].operator"),
    Case("Exists with a value", _tolerations(
        {"key": "Test-Key1", "operator": "Equal", "value": "Test-Value1",
         "effect": "PreferNoSchedule"},
        {"key": "Test-Key2", "operator": "Exists", "value": "Test-Value2",
         "effect": "NoExecute"}), False, "spec.tolerations[1].value: must be empty"),
    Case("valid tolerations", _tolerations(
        {"key": "Test-Key1", "operator": "Exists", "effect": "PreferNoSchedule"},
        {"key": "Test-Key2", "operator": "Equal", "value": "Test-Value", "effect": "NoSchedule"},
        {"key": "Test-Key3", "operator": "Equal", "value": "Test-Value", "effect": "NoExecute"}),
        True),
    Case("invalid key", _tolerations(
        {"key": "Invalid Key!", "operator": "Equal", "value": "Test-Value"}), False,
        "is not a qualified name"),
    Case("empty key with Equal", _tolerations(
        {"key": "", "operator": "Equal", "value": "Test-Value"}), False,
        "must be 'Exists' when key is empty"),
    Case("tolerationSeconds without NoExecute", _tolerations(
        {"key": "Test-Key", "operator": "Equal", "value": "Test-Value", "effect": "NoSchedule",
         "tolerationSeconds": 30}), False, "must be 'NoExecute' when tolerationSeconds"),
    Case("tolerationSeconds with NoExecute", _tolerations(
        {"key": "Test-Key", "operator": "Equal", "value": "Test-Value", "effect": "NoExecute",
         "tolerationSeconds": 60}), True),
    Case("invalid effect", _tolerations(
        {"key": "Test-Key", "operator": "Exists", "effect": "Invalid-Effect"}), False,
        "'Invalid-Effect': must be one of"),
    Case("operator neither Equal nor Exists", _tolerations(
        {"key": "Test-Key", "operator": "InvalidOperator", "value": "Test-Value"}), False,
        "'InvalidOperator': must be 'Equal' or 'Exists'"),
    Case("no tolerations", _tolerations(), True),
    # validateDRA
    Case("no dra", {}, True),
    Case("dra on 1.33", _dra(), False, "requires Kubernetes 1.34", kube="1.33"),
    Case("dra on 1.34", _dra(), True, kube="1.34"),
    Case("dra on 1.35", _dra(), True, kube="1.35"),
    Case("dra on 2.0", _dra(), True, kube="2.0"),
    Case("dra on 0.99", _dra(), False, "requires Kubernetes 1.34", kube="0.99"),
    Case("dra, no version (hub)", _dra(), True, kube=None),
    Case("empty driverName", _dra(driverName=""), False, "spec.dra.driverName: required"),
    Case("invalid driverName", _dra(driverName="INVALID_NAME!"), False,
         "is not a DNS subdomain"),
    Case("valid driverName", _dra(), True),
    Case("duplicate device classes", _dra(deviceClasses=[{"name": "gpu"}, {"name": "gpu"}]),
         False, "'gpu' is a duplicate"),
    Case("invalid device class", _dra(deviceClasses=[{"name": "INVALID!"}]), False,
         "is not a DNS subdomain"),
    Case("valid device classes", _dra(deviceClasses=[{"name": "gpu"}, {"name": "fpga"}]), True),
    # validateHostPathVolumes (KMM calls it with "spec.test"; a Module has it under dra)
    Case("no volumes (nil)", _dra(), True),
    Case("no volumes (empty list)", _dra(volumes=[]), True),
    Case("a configMap volume", _dra(volumes=[{"name": "config",
                                              "configMap": {"name": "my-cm"}}]), True),
    Case("hostPath /dev", _volumes("/dev"), True),
    Case("hostPath under /sys", _volumes("/sys/class/net"), True),
    Case("hostPath under /var", _volumes("/var/lib/kubelet/device-plugins"), True),
    Case("hostPath under /opt", _volumes("/opt/lib/firmware"), True),
    Case("hostPath /", _volumes("/"), False, "'/' is not under"),
    Case("hostPath under /etc", _volumes("/etc/config"), False, "'/etc/config' is not under"),
    Case("hostPath /devious", _volumes("/devious"), False, "'/devious' is not under"),
    Case("hostPath /dev/../etc/shadow", _volumes("/dev/../etc/shadow"), False,
         "'/dev/../etc/shadow' (it resolves to '/etc/shadow') is not under"),
    Case("hostPath with redundant slashes", _volumes("/sys//class//net"), True),
    Case("field path, dra", _volumes("/etc/secret"), False, "spec.dra.volumes[0]"),
    Case("field path, devicePlugin", _volumes("/etc/secret", where="devicePlugin"), False,
         "spec.devicePlugin.volumes[0]"),
]


def _module(spec: dict[str, Any], meta: tuple[str, str]) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Module",
            "metadata": {"name": meta[0], "namespace": meta[1]},
            "spec": {**copy.deepcopy(spec), "selector": {}}}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kmm_webhook_case(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, case: Case) -> None:
    args = ["module", "validate", "-f", str(write(tmp_path, _module(case.spec, case.meta)))]
    if case.kube:
        args += ["--kube-version", case.kube]
    if case.previous is not None:
        args += ["--previous", str(write(tmp_path, _module(case.previous, case.meta),
                                         name="previous.yaml"))]
    code, text = dtk(monkeypatch, *args)
    assert code == (0 if case.admitted else 2), text
    assert "Traceback" not in text
    if case.said:
        assert case.said in text, text
    if case.crd:
        assert "CRD schema" in text, text


def test_every_case_of_kmm_is_here() -> None:
    """module_test.go at de3f8c9 has 73 It/Entry cases; two check no Module (the
    maxCombinedLength constant, ValidateDelete). Of the other 71, four hold several
    Modules, each one case here: two images (tag, digest), three container specs, two
    empty volume lists (nil, []), two field paths (dra, devicePlugin)."""
    assert len(CASES) == 71 + 1 + 2 + 1 + 1
