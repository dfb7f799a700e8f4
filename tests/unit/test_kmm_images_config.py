"""`dtk module plan -f mic.yaml`: a ModuleImagesConfig or ModuleBuildSignConfig (KMM's
internal CRDs between a Module and its builds, api/v1beta1/moduleimagesconfig_types.go
and modulebuildsignconfig_types.go, mic_reconciler.go and mbsc_reconciler.go at
de3f8c9), read strictly as the API server reads it, and planned as KMM's reconcilers
take it. The round trip: what `render --kmm-objects` writes from a Module plans to the
same images, builds and signs as the Module itself."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from dtk.kmm import kmmobjects
from dtk.kmm import state as image_state
from dtk.kmmapi import model as m
from dtk.kmmapi.imageplan import plan_images
from dtk.kmmapi.load import load_documents
from dtk.kmmapi.plan import GENERATION_LABEL, SIGN_LABEL, plan, to_json
from tests.unit.kmm_support import MANIFESTS, dtk, rejected, write

STD, RT, TRIXIE = "6.1.0-56-amd64", "6.1.0-56-rt-amd64", "6.12.57+deb13-amd64"
KERNELS = [STD, RT, TRIXIE, "6.12.99+deb13-amd64"]
OTHERS = [MANIFESTS / "configmaps.yaml", MANIFESTS / "secrets.yaml"]
# What a MIC carries per image; the kernel mapping (which one matched, and how) and the
# in-tree modules to remove are the Module's business, not its images'.
IMAGE_KEYS = ("kernel", "image", "buildImage", "registryTLS", "build", "sign", "kmmBuildPod",
              "kmmSignPod", "dirName", "pullPolicy")


def _mic(images: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": m.API_VERSION, "kind": m.MIC_KIND,
            "metadata": {"name": "kmm-ci", "namespace": "drivers"},
            "spec": {"images": images, **spec}}


def _mbsc(images: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {**_mic(images, **spec), "kind": m.MBSC_KIND}


def _image(kernel: str = STD, **fields: Any) -> dict[str, Any]:
    return {"image": f"registry.example.com/drivers/kmm-ci:{kernel}", "kernelVersion": kernel,
            **fields}


BUILD = {"dockerfileConfigMap": {"name": "kmm-ci-dockerfile"}}
SIGN = {"keySecret": {"name": "signing-key"}, "certSecret": {"name": "signing-cert"},
        "filesToSign": [f"/opt/lib/modules/{STD}/kmm_ci_a.ko"]}


def _per_image(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{k: kernel[k] for k in IMAGE_KEYS} for kernel in doc["kernels"]]


def test_render_then_plan_gives_the_modules_images(tmp_path: Path) -> None:
    bundle = load_documents([MANIFESTS])
    mod = bundle.module(None)
    from_module = plan(mod, KERNELS, bundle)
    mic = kmmobjects.module_images_config(mod, from_module)
    loaded = load_documents([write(tmp_path, mic, name="mic.yaml"), *OTHERS])
    (cfg,) = loaded.images_configs
    from_mic = plan_images(cfg, loaded)
    # The two 6.12 kernels share one image: KMM's MIC keeps it once (filterDuplicateImages).
    kept = [kp for kp in from_module.kernels if kp.kernel != KERNELS[-1]]
    assert [kp.kernel for kp in from_mic.kernels] == [kp.kernel for kp in kept]
    assert _per_image(to_json(from_mic)) == [row for row in _per_image(to_json(from_module))
                                            if row["kernel"] != KERNELS[-1]]
    # The sign spec an image's label records is the same, so an image `dtk module build`
    # signed from the Module is current when planned from its MIC, and the other way.
    assert [kp.sign.digest if kp.sign else None for kp in from_mic.kernels] == \
        [kp.sign.digest if kp.sign else None for kp in kept]
    assert (from_mic.kind, from_mic.push_built_image, from_mic.image_pull_policy) == \
        (m.MIC_KIND, True, "IfNotPresent")


def test_the_cli_round_trip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`render --kmm-objects -o mic.yaml`, then `plan -f mic.yaml` with the same
    ConfigMaps and Secrets: the images, builds and signs the Module's plan gives."""
    kernels = [arg for k in KERNELS[:3] for arg in ("--kernel", k)]
    mic = tmp_path / "mic.yaml"
    code, text = dtk(monkeypatch, "module", "render", "-f", str(MANIFESTS), *kernels,
                     "--kmm-objects", "--no-state", "-o", str(mic))
    assert code == 0, text
    code, direct = dtk(monkeypatch, "module", "plan", "-f", str(MANIFESTS), *kernels,
                       "--no-state", "--json")
    assert code == 0, direct
    args = [a for path in OTHERS for a in ("-f", str(path))]
    code, via_mic = dtk(monkeypatch, "module", "plan", "-f", str(mic), *args, "--no-state",
                        "--json")
    assert code == 0, via_mic
    planned = json.loads(via_mic)
    assert planned["kind"] == m.MIC_KIND
    assert _per_image(planned) == _per_image(json.loads(direct))
    # With the Module beside it (its directory holds the ConfigMaps), the MIC is planned.
    code, text = dtk(monkeypatch, "module", "plan", "-f", str(mic), "-f", str(MANIFESTS),
                     "--no-state")
    assert code == 0, text
    assert f"note: Module drivers/kmm-ci not planned: the {m.MIC_KIND} is" in text
    assert f"{m.MIC_KIND} drivers/kmm-ci\n" in text
    assert "images[2]" in text


@pytest.mark.parametrize(("doc", "message"), [
    (_mic([_image(imagePullSecrets=[])]), "spec.images[0].imagePullSecrets: unknown field"),
    (_mic([_image()], pushBuiltImage="yes"), "spec.pushBuiltImage: must be a boolean"),
    (_mic([{"image": "r.example/x:1"}]), "spec.images[0].kernelVersion: required field"),
    (_mic([_image(build={"buildArgs": [{"name": "A"}]})]),
     "spec.images[0].build.dockerfileConfigMap: required field"),
    (_mic([_image(sign={"keySecret": {"name": "signing-key"}})]),
     "spec.images[0].sign.certSecret: required field"),
    (_mic([_image(skipWaitMissingImage="true")]),
     "spec.images[0].skipWaitMissingImage: must be a boolean"),
    (_mic([_image(action="BuildImage")]), "spec.images[0].action: unknown field"),
    (_mbsc([_image()]), "spec.images[0].action: required field"),
    (_mbsc([_image(action="Build")]),
     "spec.images[0].action: unsupported value 'Build': must be BuildImage or SignImage"),
    (_mbsc([_image(action="BuildImage")], imagePullPolicy="Always"),
     "spec.imagePullPolicy: unknown field"),
    ({**_mbsc([]), "spec": {"pushBuiltImage": True}}, "spec.images: required field"),
    (_mic([_image(build={"dockerfileConfigMap": {"name": "absent"}})]),
     "spec.images[0].build.dockerfileConfigMap.name: ConfigMap drivers/absent is not among"),
    (_mic([_image()], imageRepoSecret={"name": "absent"}),
     "spec.imageRepoSecret.name: Secret drivers/absent is not among"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_read_strictly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, doc: dict[str, Any],
                       message: str) -> None:
    path = write(tmp_path, doc, name="mic.yaml")
    text = rejected(monkeypatch, path, *[a for p in OTHERS for a in ("-f", str(p))])
    assert message in text


def test_a_valid_mic_validates(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, {**_mic([_image(build=BUILD, sign=SIGN)]), "status": {}},
                 name="mic.yaml")
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(path),
                     *[a for p in OTHERS for a in ("-f", str(p))], "--json")
    assert code == 0, text
    assert json.loads(text) == [{"kind": m.MIC_KIND, "module": "kmm-ci",
                                 "namespace": "drivers", "valid": True}]


def _plan_of(tmp_path: Path, doc: dict[str, Any]) -> Any:
    bundle = load_documents([write(tmp_path, doc, name="mic.yaml"), *OTHERS])
    (cfg,) = bundle.images_configs
    return cfg, plan_images(cfg, bundle)


def _lookup(images: Mapping[str, Mapping[str, str]]) -> image_state.Lookup:
    """Image name -> labels: what local storage or a registry would answer (the states
    are pure; tools are tested in the integration tests)."""
    def look(image: str, _tls: m.TLSOptions) -> image_state.Found | None:
        labels = images.get(image)
        return None if labels is None else image_state.Found("sha256:0", "local", labels)
    return look


def test_skip_wait_missing_image(tmp_path: Path) -> None:
    """The MIC reconciler: a missing image with neither build nor sign is DoesNotExist
    when skipWaitMissingImage is set (its pull pod is one-time); otherwise the pull pod
    keeps waiting and no state is ever recorded."""
    _cfg, p = _plan_of(tmp_path, _mic([_image(STD, skipWaitMissingImage=True), _image(RT)]))
    skip, wait = image_state.states(p, _lookup({}))
    assert skip.state is image_state.ImageState.DOES_NOT_EXIST
    assert wait.state is None
    assert wait.error is not None and wait.error.endswith(
        f"the {m.MIC_KIND} has no build or sign for this kernel: KMM's pull pod keeps waiting "
        "for it")
    assert image_state.failed([skip]) and image_state.failed([wait])
    present = image_state.states(p, _lookup({_image(STD)["image"]: {}}))[0]
    assert present.state is image_state.ImageState.EXISTS


def test_the_mics_generation_decides(tmp_path: Path) -> None:
    cfg, p = _plan_of(tmp_path, _mic([_image(build=BUILD)], imageRebuildTriggerGeneration=3))
    image = _image()["image"]
    for label, expected in (("3", image_state.ImageState.EXISTS),
                            ("2", image_state.ImageState.NEEDS_BUILDING)):
        (s,) = image_state.states(p, _lookup({image: {GENERATION_LABEL: label,
                                                       SIGN_LABEL: ""}}),
                                  cfg.image_rebuild_trigger_generation)
        assert s.state is expected


@pytest.mark.parametrize(("policy", "image", "expected"), [
    (None, "r.example/x:1", "IfNotPresent"),  # the MIC CRD's default for a missing field
    ("", "r.example/x:1", "IfNotPresent"),  # "" stays: the pod's defaulting decides
    ("", "r.example/x:latest", "Always"),
    ("", "r.example:5000/x", "Always"),  # no tag is latest; the port is no tag
    ("", "r.example/x@sha256:" + "0" * 64, "IfNotPresent"),
    ("Never", "r.example/x:latest", "Never"),
])
def test_pull_policy_as_the_pull_pod_gets_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                             policy: str | None, image: str,
                                             expected: str) -> None:
    spec = {} if policy is None else {"imagePullPolicy": policy}
    path = write(tmp_path, _mic([{"image": image, "kernelVersion": STD}], **spec),
                 name="mic.yaml")
    code, text = dtk(monkeypatch, "module", "plan", "-f", str(path), "--no-state", "--json")
    assert code == 0, text
    assert json.loads(text)["kernels"][0]["pullPolicy"] == expected


def test_a_pull_policy_no_pod_takes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The MIC's CRD admits any string; the pull pods KMM makes from it are refused, so
    no image state is ever recorded: admitted with a warning, and every image an error."""
    path = write(tmp_path, _mic([_image()], imagePullPolicy="Sometimes"), name="mic.yaml")
    code, text = dtk(monkeypatch, "module", "validate", "-f", str(path))
    assert code == 0, text
    assert f"warning: {m.MIC_KIND} drivers/kmm-ci" in text
    assert "spec.imagePullPolicy 'Sometimes': the API server admits it, but refuses the " \
           "pods KMM makes from it" in text
    _cfg, p = _plan_of(tmp_path, _mic([_image()], imagePullPolicy="Sometimes"))
    (s,) = image_state.states(p, _lookup({_image()["image"]: {}}))
    assert s.state is None and s.error is not None and "'Sometimes'" in s.error


def test_push_built_image_false(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PreflightValidation's MIC: KMM builds with --no-push."""
    doc = _mic([_image(build=BUILD, sign=SIGN), _image(RT)], pushBuiltImage=False)
    path = write(tmp_path, doc, name="mic.yaml")
    code, text = dtk(monkeypatch, "module", "plan", "-f", str(path),
                     *[a for p in OTHERS for a in ("-f", str(p))], "--no-state")
    assert code == 0, text
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("6.")}
    assert "build+sign (no push)" in rows[STD]
    assert "(no push)" not in rows[RT]  # nothing to build, nothing pushed


def test_mbsc_actions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An MBSC is planned as the MBSC reconciler runs it: no lookup, one action per image;
    an action the image cannot run (KMM could make no pod for it) is an error."""
    doc = _mbsc([_image(STD, build=BUILD, sign=SIGN, action="BuildImage"),
                 _image(RT, sign={**SIGN, "unsignedImage": "r.example/u:1"},
                        action="SignImage"),
                 _image(TRIXIE, action="BuildImage")], pushBuiltImage=True)
    path = write(tmp_path, doc, name="mbsc.yaml")
    args = [a for p in OTHERS for a in ("-f", str(p))]
    code, text = dtk(monkeypatch, "module", "plan", "-f", str(path), *args, "--json")
    assert code == 1, text
    out = json.loads(text)
    assert out["kind"] == m.MBSC_KIND
    assert [(s["kernel"], s["state"]) for s in out["states"]] == [
        (STD, "NeedsBuilding"), (RT, "NeedsSigning"), (TRIXIE, None)]
    assert out["states"][2]["error"] == "action BuildImage, but the image has no build section"
    assert [k["action"] for k in out["kernels"]] == ["BuildImage", "SignImage", "BuildImage"]
    assert out["kernels"][0]["pullPolicy"] is None  # an MBSC makes no pull pods
    assert out["kernels"][1]["sign"]["unsignedImage"] == "r.example/u:1"
    code, text = dtk(monkeypatch, "module", "plan", "-f", str(path), *args)
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith("6.")}
    assert " build " in rows[STD] and " sign " in rows[RT]


def test_render_then_mbsc(tmp_path: Path) -> None:
    """The MBSC `render --kmm-objects` writes (from the image states) plans to the same
    actions the states asked for."""
    bundle = load_documents([MANIFESTS])
    mod = bundle.module(None)
    p = plan(mod, KERNELS[:3], bundle)
    states = {STD: image_state.KernelState(STD, p.kernels[0].image,
                                           image_state.ImageState.NEEDS_BUILDING),
              RT: image_state.KernelState(RT, p.kernels[1].image,
                                          image_state.ImageState.NEEDS_SIGNING)}
    mbsc = kmmobjects.module_build_sign_config(mod, p, states)
    assert mbsc is not None
    loaded = load_documents([write(tmp_path, mbsc, name="mbsc.yaml"), *OTHERS])
    (cfg,) = loaded.images_configs
    result = image_state.action_states(plan_images(cfg, loaded))
    assert [(s.kernel, s.state) for s in result] == [
        (STD, image_state.ImageState.NEEDS_BUILDING), (RT, image_state.ImageState.NEEDS_SIGNING)]


def test_kernel_options_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, _mic([_image()]), name="mic.yaml")
    code, text = dtk(monkeypatch, "module", "plan", "-f", str(path), "--kernel", STD)
    assert code == 2, text
    assert f"a {m.MIC_KIND} names its kernels itself" in text
    assert "drop --kernel" in text


def test_a_mic_from_the_cluster_reads(tmp_path: Path) -> None:
    """As `kubectl get mic -o yaml` gives it: status, owner references, managed fields."""
    doc = _mic([_image(build=BUILD)])
    doc["metadata"].update(ownerReferences=[{"apiVersion": m.API_VERSION, "kind": "Module",
                                             "name": "kmm-ci", "uid": "0"}], generation=2)
    doc["status"] = {"imagesStates": [{"image": _image()["image"], "status": "Exists"}]}
    text = yaml.safe_dump(doc)
    (tmp_path / "mic.yaml").write_text(text)
    bundle = load_documents([tmp_path / "mic.yaml", *OTHERS])
    assert [c.kind for c in bundle.images_configs] == [m.MIC_KIND]
