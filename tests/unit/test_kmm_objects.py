"""`dtk module render --kmm-objects`: the ModuleImagesConfig and ModuleBuildSignConfig
KMM's operator makes from a Module (internal/controllers/module_reconciler.go handleMIC,
internal/mic, internal/mbsc, mic_reconciler.go at de3f8c9), on the example manifests."""

from __future__ import annotations

import pytest
import yaml

from dtk.kmm import kmmobjects
from dtk.kmm.state import ImageState, KernelState
from dtk.kmmapi import model as m
from dtk.kmmapi.load import load_documents
from dtk.kmmapi.plan import plan
from tests.unit.kmm_support import MANIFESTS, dtk

STD, RT, TRIXIE = "6.1.0-56-amd64", "6.1.0-56-rt-amd64", "6.12.57+deb13-amd64"


@pytest.fixture(scope="module")
def bundle() -> m.Bundle:
    return load_documents([MANIFESTS])


def test_mic_holds_what_the_kernel_mapper_gives_per_kernel(bundle: m.Bundle) -> None:
    mod = bundle.module(None)
    p = plan(mod, [STD, RT, TRIXIE, "6.12.99+deb13-amd64"], bundle)
    mic = kmmobjects.module_images_config(mod, p)
    assert (mic["apiVersion"], mic["kind"], mic["metadata"]) == (
        "kmm.sigs.x-k8s.io/v1beta1", "ModuleImagesConfig",
        {"name": mod.name, "namespace": mod.namespace})
    spec = mic["spec"]
    # One image per kernel, duplicates by image dropped (both 6.12 map to prebuilt:6.12).
    assert [i["image"] for i in spec["images"]] == list(dict.fromkeys(k.image for k in p.kernels))
    assert len(spec["images"]) == 3
    std, rt, prebuilt = spec["images"]
    assert std["kernelVersion"] == STD and std["dirName"] == "/opt"
    # The merged build as KMM's getRelevantBuild leaves it: no injected build args.
    assert std["build"]["dockerfileConfigMap"] == {"name": "kmm-ci-dockerfile"}
    assert [a["name"] for a in std["build"]["buildArgs"]] == ["KERNEL_VERSION", "VENDOR"]
    assert rt["build"]["dockerfileConfigMap"] == {"name": "kmm-ci-dockerfile-rt"}
    # filesToSign appended and substituted with the normalised kernel; no unsignedImage
    # with a build (KMM 9d626f4 signs containerImage in place).
    assert rt["sign"]["filesToSign"] == [f"/opt/lib/modules/{RT}/kmm_ci_a.ko",
                                         f"/opt/lib/modules/{RT}/kmm_ci_b.ko"]
    assert "unsignedImage" not in rt["sign"]
    assert rt["registryTLS"] == {"insecureSkipTLSVerify": True} and std["registryTLS"] == {}
    # The container's build and sign apply to a mapping that has none of its own.
    assert prebuilt["build"]["dockerfileConfigMap"] == {"name": "kmm-ci-dockerfile"}
    assert prebuilt["sign"]["filesToSign"] == ["/opt/lib/modules/6.12.57_deb13-amd64/kmm_ci_a.ko"]
    assert spec["imageRepoSecret"] == {"name": mod.image_repo_secret}
    assert spec["imagePullPolicy"] == "IfNotPresent" and spec["pushBuiltImage"] is True
    assert len(spec["tolerations"]) == len(mod.tolerations)


def test_mbsc_holds_what_needs_building_or_signing(bundle: m.Bundle) -> None:
    mod = bundle.module(None)
    p = plan(mod, [STD, RT, TRIXIE], bundle)
    states = {STD: KernelState(STD, p.kernels[0].image, ImageState.NEEDS_BUILDING),
              RT: KernelState(RT, p.kernels[1].image, ImageState.EXISTS),
              TRIXIE: KernelState(TRIXIE, p.kernels[2].image, ImageState.NEEDS_SIGNING)}
    mbsc = kmmobjects.module_build_sign_config(mod, p, states)
    assert mbsc is not None and mbsc["kind"] == "ModuleBuildSignConfig"
    assert [(i["image"], i["action"]) for i in mbsc["spec"]["images"]] == [
        (p.kernels[0].image, "BuildImage"), (p.kernels[2].image, "SignImage")]
    assert mbsc["spec"]["pushBuiltImage"] is True
    exists = {k: KernelState(k, "", ImageState.EXISTS) for k in (STD, RT, TRIXIE)}
    assert kmmobjects.module_build_sign_config(mod, p, exists) is None


def test_render_kmm_objects_on_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    code, text = dtk(monkeypatch, "module", "render", "-f", str(MANIFESTS), "--kernel", STD,
                     "--kmm-objects", "--no-state")
    assert code == 0, text
    docs = list(yaml.safe_load_all(text[text.index("apiVersion"):]))
    assert docs[0]["kind"] == "ModuleImagesConfig"
    assert [i["kernelVersion"] for i in docs[0]["spec"]["images"]] == [STD]
    assert len(docs) == 1  # without the image states, no MBSC
