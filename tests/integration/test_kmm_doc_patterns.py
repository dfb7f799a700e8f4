"""What KMM's documentation and CI examples exercise, written as dtk's own Modules and
taken through `dtk module validate` → `plan` → `build` → `vmtest`.

KMM's examples (kubernetes-sigs/kernel-module-management at de3f8c9: the Module blocks of
its documentation pages on deploying, building, signing, firmware and hub/spoke, its
developer page and labs, and its CI Modules) were read to learn which fields and flows
each one shows. Nothing of them is copied, fetched or built here: every Module below is
written in this file, and what it builds is dtk's own driver (examples/dtk-example, with
its `greeting` parameter and /dev/dtk_example) and a helper module whose source this file
writes. The ConfigMap's Dockerfile takes both from a source image named by a build
argument (KMM's builds have no context; KMM's own examples `git clone` their sources).

The patterns, and what each case goes through:

* `annotated` — build + sign as KMM's CI build-sign Module, its annotated Module and its
  build-and-sign page show them: a ConfigMap Dockerfile, buildArgs, a build Secret a RUN
  step reads, base-image and registry TLS, kanikoParams, `filesToSign` as a glob,
  `modulesLoadingOrder`, `inTreeModulesToRemove`, parameters, `firmwarePath`, an
  imageRepoSecret, `$MOD_NAMESPACE/$MOD_NAME:$KERNEL_FULL_VERSION`, tolerations and a
  device plugin: validate, plan, build + sign + push, then "exists"; the rebuild trigger
  (`imageRebuildTriggerGeneration` 1 → 2): NeedsBuilding, rebuilt and pushed; vmtest of
  the rebuilt image, pulled from the registry.
* `dra` — a built (unsigned) module with a DRA driver, as KMM's CI DRA Module and its
  annotated DRA Module: validate (admitted on 1.34, refused on 1.33), plan, build + push,
  vmtest.
* `presigned` — signing a pre-built image (`unsignedImage`: `dra`'s, pulled from the
  registry): validate, plan NeedsSigning, sign + push, vmtest.
* `loaderless` — device-plugin-only and DRA-only Modules: validate; plan: nothing to load.
* `elsewhere` — the labs' mappings for other distributions' kernels: validate; plan: no
  mapping for a Debian kernel.
* in-tree dependencies, both image layouts: test_kmm_worker.py (validate, plan, build,
  check, vmtest).
* `REFUSED` — each example KMM itself refuses, its flaw put on a Module of ours:
  validate refuses it, naming the same rule (the table is in docs/kmm.md).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from dtk.engine import buildah, skopeo
from dtk.kmmapi.plan import GENERATION_LABEL, intermediate_image, resource_name
from dtk.kmod import keygen
from dtk.kmod.check import SignatureTrust
from dtk.kmod.image import read_modules
from dtk.kmod.sign import load_cert
from tests.integration.conftest import AuthRegistry
from tests.unit.kmm_support import dtk

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dtk-example"
API = "kmm.sigs.x-k8s.io/v1beta1"
C = "spec.moduleLoader.container"
HELPER = "dtk_docs_helper"
GREETING = "greeted-by-the-docs-patterns"
FIRMWARE = "dtk-docs/blob.bin"
TOKEN = "docs-build-token"  # the build Secret

# Loaded before dtk_example by modulesLoadingOrder; says so in the kernel log.
HELPER_C = r"""// SPDX-License-Identifier: GPL-2.0
#include <linux/module.h>

static int __init dtk_docs_helper_init(void)
{
	pr_info("dtk_docs_helper: loaded\n");
	return 0;
}

static void __exit dtk_docs_helper_exit(void)
{
	pr_info("dtk_docs_helper: unloaded\n");
}

module_init(dtk_docs_helper_init);
module_exit(dtk_docs_helper_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("dtk test helper: a module loaded before another by modulesLoadingOrder");
"""

# The sources come from the image SRC names; the build Secret must hold the bytes whose
# sha256 TOKEN_SHA256 gives (the RUN step fails otherwise), so the build proves it was
# mounted without the Dockerfile or a log holding its value.
DOCKERFILE = r"""ARG DTK_AUTO
ARG DTK_BASE
ARG SRC
FROM ${SRC} AS source
FROM ${DTK_AUTO} AS builder
ARG KERNEL_FULL_VERSION
ARG TOKEN_SHA256
COPY --from=source /src /src
RUN echo "${TOKEN_SHA256}  /run/secrets/docs-build-token/token" | sha256sum -c -
RUN make -C /usr/src/linux-headers-${KERNEL_FULL_VERSION} M=/src modules
FROM ${DTK_BASE}
ARG KERNEL_FULL_VERSION
COPY --from=builder /src/dtk_example.ko /src/dtk_docs_helper.ko \
     /opt/lib/modules/${KERNEL_FULL_VERSION}/
COPY --from=source /firmware /firmware
RUN depmod -b /opt ${KERNEL_FULL_VERSION}
"""

# What the guest prints while the module is loaded: loaded modules, the device's answer,
# the copied firmware, and the load order as the kernel logged it.
CHECK = ("cut -d' ' -f1 /proc/modules; cat /dev/dtk_example; "
         f"cat /var/lib/firmware/{FIRMWARE} 2>/dev/null; dmesg | grep -o 'dtk_[a-z_]*: loaded'")


@dataclass
class Stage:
    """What every pattern shares: the kernel, a registry with a password, a namespace of
    this run, the signing keys, the source image and the objects the Modules name."""

    tmp: Path
    kernel: str
    registry: AuthRegistry
    namespace: str
    source: str
    keys: keygen.KeyFiles
    token: str
    made: list[str] = field(default_factory=list)

    def image(self, module: str) -> str:
        return f"{self.registry.address}/{self.namespace}/{module}:{self.kernel}"

    def meta(self, name: str) -> dict[str, str]:
        return {"name": name, "namespace": self.namespace}

    def objects(self) -> list[dict[str, Any]]:
        """The ConfigMap and Secrets the Modules name, as a user would apply them."""
        return [
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": self.meta("docs-dockerfile"),
             "data": {"dockerfile": DOCKERFILE}},
            _secret(self, TOKEN, {"token": self.token}),
            _secret(self, "docs-signing-key", {"key": self.keys.key.read_text()}),
            _secret(self, "docs-signing-cert", {"cert": self.keys.cert_pem.read_text()}),
            _secret(self, "docs-registry", {".dockerconfigjson":
                                            self.registry.dockerconfigjson()},
                    "kubernetes.io/dockerconfigjson")]

    def write(self, name: str, *docs: dict[str, Any]) -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump_all(list(docs), sort_keys=False))
        return path


def _secret(stage: Stage, name: str, values: dict[str, str], kind: str = "Opaque"
            ) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": kind, "metadata": stage.meta(name),
            "stringData": values}


def _module(stage: Stage, name: str, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "Module", "metadata": stage.meta(name),
            "spec": {**spec, "selector": {"node-role.kubernetes.io/worker": ""}, **extra}}


def build(stage: Stage) -> dict[str, Any]:
    """The build section every building pattern shares (the annotated Module's fields)."""
    return {"dockerfileConfigMap": {"name": "docs-dockerfile"},
            "buildArgs": [{"name": "SRC", "value": stage.source},
                          {"name": "TOKEN_SHA256",
                           "value": hashlib.sha256(stage.token.encode()).hexdigest()}],
            "secrets": [{"name": TOKEN}],
            "baseImageRegistryTLS": {"insecure": False},
            "kanikoParams": {"tag": "debug"}}


def sign(files: list[str]) -> dict[str, Any]:
    return {"keySecret": {"name": "docs-signing-key"},
            "certSecret": {"name": "docs-signing-cert"}, "filesToSign": files}


ANNOTATED = "dtk-docs-annotated"


def annotated(stage: Stage, generation: int) -> dict[str, Any]:
    """Build + sign with most options set, as KMM's CI and annotated Modules show them."""
    return _module(stage, ANNOTATED, {
        "moduleLoader": {"container": {
            "modprobe": {"moduleName": "dtk_example", "dirName": "/opt",
                         "firmwarePath": "/firmware", "parameters": [f"greeting={GREETING}"],
                         "modulesLoadingOrder": ["dtk_example", HELPER]},
            "imagePullPolicy": "Always",
            "inTreeModulesToRemove": ["dummy"],
            "kernelMappings": [
                {"literal": "6.0.0-0-dtk-never", "containerImage": "registry.invalid/x:never"},
                {"regexp": "^.+$",
                 "containerImage": f"{stage.registry.address}/$MOD_NAMESPACE/$MOD_NAME:"
                                   "${KERNEL_FULL_VERSION}",
                 "registryTLS": {"insecure": True},
                 "build": build(stage),
                 "sign": {**sign(["/opt/lib/modules/${KERNEL_FULL_VERSION}/dtk_*.ko"]),
                          "unsignedImageRegistryTLS": {"insecure": True}}}]}},
        "devicePlugin": {
            "container": {"image": "registry.invalid/dtk-docs/device-plugin:1",
                          "env": [{"name": "DTK_DOCS", "value": "1"}],
                          "volumeMounts": [{"name": "devices", "mountPath": "/dev/dtk"}]},
            "volumes": [{"name": "devices", "hostPath": {"path": "/dev/dtk"}}],
            "automountServiceAccountToken": False},
        "imageRepoSecret": {"name": "docs-registry"},
        "imageRebuildTriggerGeneration": generation,
        "tolerations": [{"key": "dtk.example/driver", "operator": "Exists",
                         "effect": "NoSchedule"}]})


DRA = "dtk-docs-dra"
DRIVER = "docs.dtk.example"


def dra(stage: Stage) -> dict[str, Any]:
    """A module built (unsigned) and a DRA driver, as KMM's CI DRA Module and the
    annotated DRA Module show them."""
    return _module(stage, DRA, {
        "moduleLoader": {"container": {
            "modprobe": {"moduleName": "dtk_example"},
            "kernelMappings": [{
                "regexp": "^.+$",
                "containerImage": f"{stage.registry.address}/$MOD_NAMESPACE/$MOD_NAME:"
                                  "${KERNEL_FULL_VERSION}",
                "registryTLS": {"insecure": True}, "build": build(stage)}]}},
        "dra": {
            "driverName": DRIVER, "serviceAccountName": "dtk-docs-dra",
            "container": {"image": "registry.invalid/dtk-docs/dra-driver:1",
                          "command": ["dtk-docs-dra-plugin"],
                          "env": [{"name": "DRIVER_NAME", "value": DRIVER}],
                          "volumeMounts": [{"name": "state", "mountPath": "/var/lib/dtk-docs"}]},
            "initContainer": {"image": "registry.invalid/dtk-docs/dra-init:1"},
            "volumes": [{"name": "state", "hostPath": {"path": "/var/lib/dtk-docs"}}],
            "deviceClasses": [{
                "name": "dtk-docs-device",
                "selectors": [{"cel": {"expression": f"device.driver == '{DRIVER}'"}}],
                "config": [{"opaque": {"driver": DRIVER, "parameters": {
                    "apiVersion": f"{DRIVER}/v1", "kind": "DocsConfig",
                    "spec": {"mode": "plain"}}}}]}]},
        "imageRepoSecret": {"name": "docs-registry"}})


PRESIGNED = "dtk-docs-presigned"


def presigned(stage: Stage, unsigned: str) -> dict[str, Any]:
    """Sign the modules of an image built elsewhere (`unsignedImage`), as the signing
    page's first Module does: one file named, another left as it is."""
    target = f"{stage.registry.address}/{stage.namespace}/{PRESIGNED}:${{KERNEL_FULL_VERSION}}"
    return _module(stage, PRESIGNED, {
        "moduleLoader": {"serviceAccountName": "default", "container": {
            "modprobe": {"moduleName": "dtk_example"},
            "kernelMappings": [{
                "regexp": "^.+-amd64$", "containerImage": target + "-signed",
                "registryTLS": {"insecure": True},
                "sign": {**sign(["/opt/lib/modules/${KERNEL_FULL_VERSION}/dtk_example.ko"]),
                         "unsignedImage": unsigned.replace(stage.kernel,
                                                           "${KERNEL_FULL_VERSION}"),
                         "unsignedImageRegistryTLS": {"insecure": True}}}]}},
        "imageRepoSecret": {"name": "docs-registry"}})


def _source_image(root: Path, tag: str) -> str:
    """`tag`: dtk_example's source, the helper's, a Kbuild for both, and a firmware file."""
    (root / "src").mkdir(parents=True)
    (root / "src" / "dtk_example.c").write_bytes((EXAMPLE / "dtk_example.c").read_bytes())
    (root / "src" / f"{HELPER}.c").write_text(HELPER_C)
    (root / "src" / "Kbuild").write_text(f"obj-m := dtk_example.o {HELPER}.o\n")
    (root / "firmware" / FIRMWARE).parent.mkdir(parents=True)
    (root / "firmware" / FIRMWARE).write_text("dtk docs firmware\n")
    with buildah.working_container("scratch") as ctr:
        ctr.copy_in(root / "src", "/src")
        ctr.copy_in(root / "firmware", "/firmware")
        ctr.commit(tag)
    return tag


@pytest.fixture(scope="module")
def stage(tmp_path_factory: pytest.TempPathFactory, auth_registry: AuthRegistry,
          kernel_61: str, toolkit_61: Any) -> Iterator[Stage]:
    del toolkit_61  # built once for the session
    tmp = tmp_path_factory.mktemp("kmm-doc-patterns")
    namespace = f"docs-{secrets.token_hex(3)}"  # this run's images, in shared storage
    source = _source_image(tmp / "source", f"localhost/{namespace}/dtk-docs-src:1")
    made = Stage(tmp, kernel_61, auth_registry, namespace, source,
                 keygen.keygen(tmp, "dtk kmm doc patterns"), secrets.token_hex(16))
    try:
        yield made
    finally:
        for image in (source, *made.made):
            buildah.remove_image(image)


def _run(*args: str) -> tuple[int, str]:
    with pytest.MonkeyPatch.context() as mp:
        return dtk(mp, *args)


def _json(text: str) -> Any:
    """The JSON document of a command's output (progress lines may come first)."""
    start = 0 if text.startswith(("{", "[")) else \
        min(i for i in (text.find("\n{"), text.find("\n[")) if i >= 0) + 1
    return json.JSONDecoder().raw_decode(text[start:])[0]


def _files(stage: Stage, name: str, module: dict[str, Any]) -> list[str]:
    return ["-f", str(stage.write(name, module, *stage.objects()))]


def _plan(files: list[str], kernel: str) -> dict[str, Any]:
    code, text = _run("module", "plan", *files, "--kernel", kernel, "--json")
    assert code == 0, text
    planned: dict[str, Any] = _json(text)
    return planned


def _build(stage: Stage, files: list[str], module: str) -> dict[str, Any]:
    code, text = _run("module", "build", *files, "--kernel", stage.kernel, "--push", "--json")
    (result,) = _json(text)["results"]
    image = result["image"]
    stage.made += [image, intermediate_image(module, stage.namespace, image)]
    assert code == 0, text
    assert stage.token not in text
    out: dict[str, Any] = result
    return out


def _remote(stage: Stage, image: str) -> dict[str, Any]:
    auth = stage.tmp / "auth.json"
    auth.write_text(stage.registry.dockerconfigjson())
    found = skopeo.remote_inspect(image, tls_verify=False, authfile=auth)
    assert found is not None, image
    return found


def _trust(stage: Stage, image: str) -> dict[str, SignatureTrust]:
    cert = load_cert(stage.keys.cert_pem)
    return {i.module.path.rsplit("/", 1)[-1]: i.trust
            for group in read_modules(image, cert=cert).values() for i in group}


def _vmtest(files: list[str], kernel: str) -> dict[str, Any]:
    code, text = _run("module", "vmtest", *files, "--kernel", kernel, "--json",
                      "--check", CHECK)
    (result,) = _json(text)
    assert (code, result["verdict"]) == (0, "loaded"), text
    out: dict[str, Any] = result
    return out


def test_annotated_module_builds_signs_rebuilds_and_loads(stage: Stage) -> None:
    """Build + sign with most options set; the rebuild trigger; the worker's load."""
    kernel, image = stage.kernel, stage.image(ANNOTATED)
    files = _files(stage, "annotated.yaml", annotated(stage, 1))
    code, text = _run("module", "validate", *files)
    assert code == 0, text
    planned = _plan(files, kernel)
    (kp,) = planned["kernels"]
    assert (kp["mapping"], kp["image"], kp["inTreeModulesToRemove"]) == (1, image, ["dummy"])
    assert (kp["kmmBuildPod"], kp["kmmSignPod"]) == (resource_name(ANNOTATED, "build", kernel),
                                                     resource_name(ANNOTATED, "sign", kernel))
    assert [s["state"] for s in planned["states"]] == ["NeedsBuilding"]

    first = _build(stage, files, ANNOTATED)
    assert first["action"] == "built+signed", first
    log = Path(first["log"]).read_text()
    assert f"/run/secrets/{TOKEN}/token: OK" in log  # the RUN step read the build Secret
    assert stage.token not in log
    assert _trust(stage, image) == {"dtk_example.ko": SignatureTrust.TRUSTED,
                                    f"{HELPER}.ko": SignatureTrust.TRUSTED}  # the glob
    assert _remote(stage, image)["Digest"] == first["pushed"]
    again = _build(stage, files, ANNOTATED)
    assert (again["action"], again["pushed"]) == ("exists", ""), again

    # The rebuild trigger: another generation is made again, and pushed over the first.
    files = _files(stage, "annotated.yaml", annotated(stage, 2))
    assert [s["state"] for s in _plan(files, kernel)["states"]] == ["NeedsBuilding"]
    rebuilt = _build(stage, files, ANNOTATED)
    assert rebuilt["action"] == "built+signed", rebuilt
    remote = _remote(stage, image)
    assert remote["Digest"] == rebuilt["pushed"] != first["pushed"]
    assert remote["Labels"][GENERATION_LABEL] == "2", remote["Labels"]
    assert [s["state"] for s in _plan(files, kernel)["states"]] == ["Exists"]

    buildah.remove_image(image)  # the worker pulls it, with the imageRepoSecret
    vm = _vmtest(files, kernel)
    lines = vm["check_output"].splitlines()
    assert {"dtk_example", HELPER} <= set(lines) and "dummy" not in lines, lines
    assert any(line.startswith(f"{GREETING} (read 1)") for line in lines), lines  # parameters
    assert "dtk docs firmware" in lines  # firmwarePath, copied to the node's firmware path
    order = [line for line in lines if line.endswith(": loaded")]
    assert order == [f"{HELPER}: loaded", "dtk_example: loaded"], lines  # modulesLoadingOrder
    assert all(f"rmmod {m}" in vm["unload_output"] for m in ("dtk_example", HELPER)), vm


@pytest.fixture(scope="module")
def dra_built(stage: Stage) -> tuple[list[str], dict[str, Any]]:
    """The DRA Module validated (Kubernetes 1.34), planned, built and pushed."""
    files = _files(stage, "dra.yaml", dra(stage))
    code, text = _run("module", "validate", *files, "--kube-version", "1.34")
    assert code == 0, text
    planned = _plan(files, stage.kernel)
    assert [s["state"] for s in planned["states"]] == ["NeedsBuilding"]
    assert planned["kernels"][0]["kmmSignPod"] is None
    result = _build(stage, files, DRA)
    assert result["action"] == "built", result
    return files, result


def test_dra_module_is_gated_built_and_loaded(stage: Stage,
                                              dra_built: tuple[list[str], Any]) -> None:
    files, result = dra_built
    code, text = _run("module", "validate", *files, "--kube-version", "1.33")
    assert code == 2 and "spec.dra" in text and "1.34" in text, text  # KMM's version gate
    assert _trust(stage, result["image"]) == {"dtk_example.ko": SignatureTrust.UNSIGNED,
                                              f"{HELPER}.ko": SignatureTrust.UNSIGNED}
    lines = _vmtest(files, stage.kernel)["check_output"].splitlines()
    assert "dtk_example" in lines and HELPER not in lines, lines  # no loading order here
    assert "hello from dtk (read 1)" in lines, lines  # no parameters: the default greeting


def test_a_prebuilt_image_is_signed_and_loaded(stage: Stage,
                                               dra_built: tuple[list[str], Any]) -> None:
    unsigned = dra_built[1]["image"]
    files = _files(stage, "presigned.yaml", presigned(stage, unsigned))
    code, text = _run("module", "validate", *files)
    assert code == 0, text
    planned = _plan(files, stage.kernel)
    assert planned["kernels"][0]["sign"]["unsignedImage"] == unsigned
    assert planned["kernels"][0]["kmmBuildPod"] is None
    assert [s["state"] for s in planned["states"]] == ["NeedsSigning"]
    buildah.remove_image(unsigned)  # signing pulls it from the registry
    result = _build(stage, files, PRESIGNED)
    assert result["action"] == "signed" and result["image"].endswith("-signed"), result
    assert _remote(stage, result["image"])["Digest"] == result["pushed"]
    assert _trust(stage, result["image"]) == {"dtk_example.ko": SignatureTrust.TRUSTED,
                                              f"{HELPER}.ko": SignatureTrust.UNSIGNED}
    lines = _vmtest(files, stage.kernel)["check_output"].splitlines()
    assert "dtk_example" in lines, lines


@pytest.mark.parametrize("part", ["devicePlugin", "dra"])
def test_loaderless_modules_are_admitted_with_nothing_to_load(stage: Stage, part: str) -> None:
    """Only a device plugin, or only a DRA driver, with the node's in-tree module."""
    body = {"devicePlugin": {"container": {"image": "registry.invalid/dtk-docs/dp:1"}},
            "dra": {"driverName": DRIVER,
                    "container": {"image": "registry.invalid/dtk-docs/dra:1"}}}[part]
    files = _files(stage, f"{part}.yaml", _module(stage, "dtk-docs-loaderless", {part: body}))
    code, text = _run("module", "validate", *files, "--kube-version", "1.34")
    assert code == 0, text
    code, text = _run("module", "validate", *files, "--kube-version", "1.33")
    assert (code == 2) == (part == "dra"), text
    code, text = _run("module", "plan", *files, "--kernel", stage.kernel)
    assert code == 2 and "has no spec.moduleLoader" in text, text


def test_mappings_for_other_distributions_plan_nothing_here(stage: Stage) -> None:
    """The labs' Modules map their own distributions' kernels; a Debian kernel gets none."""
    mod = _module(stage, "dtk-docs-elsewhere", {"moduleLoader": {"container": {
        "modprobe": {"moduleName": "dtk_example"},
        "kernelMappings": [
            {"literal": "5.14.0-427.13.1.el9_4.x86_64",
             "containerImage": "registry.invalid/dtk-docs/el9:5.14.0-427.13.1.el9_4.x86_64"},
            {"regexp": r"^.+\.fc40\.x86_64$", "build": build(stage),
             "containerImage": "registry.invalid/dtk-docs/fc40:${KERNEL_FULL_VERSION}"}]}},
        "imageRepoSecret": {"name": "docs-registry"}})
    files = _files(stage, "elsewhere.yaml", mod)
    code, text = _run("module", "validate", *files)
    assert code == 0, text
    planned = _plan(files, stage.kernel)
    assert (planned["kernels"], planned["unmatched"]) == ([], [stage.kernel])


@dataclass(frozen=True)
class Refused:
    """A flaw of one of KMM's examples, on a Module of ours, and what dtk names."""

    flaw: str
    change: Callable[[Stage, list[dict[str, Any]]], None]
    paths: tuple[str, ...] = ()  # the fields refused
    said: str = ""  # in the message


def _container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = docs[0]["spec"]["moduleLoader"]["container"]
    return out


def _both_in_tree_fields(_: Stage, docs: list[dict[str, Any]]) -> None:
    _container(docs)["inTreeModuleToRemove"] = "dummy"
    _container(docs)["kernelMappings"][1].update(inTreeModuleToRemove="dummy",
                                                 inTreeModulesToRemove=["dummy"])


def _no_mappings(_: Stage, docs: list[dict[str, Any]]) -> None:
    del _container(docs)["kernelMappings"]


def _no_selector(_: Stage, docs: list[dict[str, Any]]) -> None:
    del docs[0]["spec"]["selector"]


def _untagged_image(_: Stage, docs: list[dict[str, Any]]) -> None:
    # No ':' anywhere: KMM's webhook only looks for one (a registry's port would pass).
    _container(docs)["kernelMappings"][1]["containerImage"] = "registry.invalid/docs/final"


def _placeholder_secret(_: Stage, docs: list[dict[str, Any]]) -> None:
    (key,) = [d for d in docs if d["metadata"]["name"] == "docs-signing-key"]
    del key["stringData"]
    key["data"] = {"key": "<the private key, base64-encoded>"}


def _old_api(_: Stage, docs: list[dict[str, Any]]) -> None:
    spec = docs[0]["spec"]
    spec["kernelMappings"] = _container(docs).pop("kernelMappings")
    spec["moduleLoader"].update(name="loader", image="registry.invalid/dtk-docs/loader:1")


def _hub(stage: Stage, docs: list[dict[str, Any]]) -> None:
    spec = docs[0].pop("spec")
    docs[0].update(apiVersion="hub.kmm.sigs.x-k8s.io/v1beta1", kind="ManagedClusterModule",
                   metadata={"name": ANNOTATED},
                   spec={"spokeNamespace": stage.namespace, "selector": {"dtk-docs": "yes"},
                         "moduleSpec": spec})


def _dra_and_device_plugin(stage: Stage, docs: list[dict[str, Any]]) -> None:
    docs[0]["spec"]["dra"] = dra(stage)["spec"]["dra"]


REFUSED = (
    Refused("annotated: inTreeModuleToRemove with inTreeModulesToRemove", _both_in_tree_fields,
            (f"{C}.inTreeModuleToRemove", f"{C}.kernelMappings[1].inTreeModuleToRemove",
             f"{C}.kernelMappings[1]"), "cannot be set together with inTreeModulesToRemove"),
    Refused("firmware: no kernelMappings", _no_mappings, (f"{C}.kernelMappings",),
            "at least one mapping is required"),
    Refused("rebuild trigger: no selector", _no_selector, ("spec.selector",), "required"),
    Refused("build and sign: containerImage without a tag", _untagged_image,
            (f"{C}.kernelMappings[1].containerImage",), "must set a tag or a digest"),
    Refused("signing Secrets: placeholders for the values", _placeholder_secret,
            ("data.key",), "is not valid base64"),
    Refused("developer page: the API before v1beta1", _old_api,
            ("spec.kernelMappings", "spec.moduleLoader.name", "spec.moduleLoader.image"),
            "unknown field"),
    Refused("hub: a ManagedClusterModule", _hub, said="no Module among the documents given"),
    Refused("dra together with devicePlugin", _dra_and_device_plugin, ("spec",),
            "devicePlugin and dra are mutually exclusive"),
)


@pytest.mark.parametrize("case", REFUSED, ids=[r.flaw for r in REFUSED])
def test_what_kmm_refuses_in_its_examples_is_refused(stage: Stage, case: Refused) -> None:
    docs = [annotated(stage, 1), *stage.objects()]
    case.change(stage, docs)
    code, text = _run("module", "validate", "-f", str(stage.write("refused.yaml", *docs)),
                      "--json")
    assert code == 2 and case.said in text, text
    problems = _json(text)["error"].get("problems", [])
    assert sorted({p["path"] for p in problems}) == sorted(case.paths), text
