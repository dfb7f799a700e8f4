"""ModuleImagesConfig and ModuleBuildSignConfig documents into the model, strictly, as
the API server reads them against KMM's CRDs (`api/v1beta1/moduleimagesconfig_types.go`,
`modulebuildsignconfig_types.go`, `config/crd/bases/` at de3f8c9).

Their `build`, `sign` and TLS options are the Module's own types, so the Module's
readers read them. The CRDs' defaults are applied as the API server applies them to a
missing field: `imagePullPolicy` IfNotPresent, an image's `dirName` /opt. KMM runs no
admission webhook for these kinds.
"""

from __future__ import annotations

from typing import Any

from dtk.kmmapi import model as m
from dtk.kmmapi import spec as spec_reader
from dtk.kmmapi.reader import Reader, child

_IMAGE = ["image", "kernelVersion", "build", "sign", "skipWaitMissingImage", "registryTLS",
          "dirName"]
_MIC_SPEC = ["images", "imageRepoSecret", "imagePullPolicy", "pushBuiltImage",
             "imageRebuildTriggerGeneration", "tolerations"]
_MBSC_SPEC = ["images", "imageRepoSecret", "pushBuiltImage", "tolerations"]
_ACTIONS = (m.BUILD_IMAGE, m.SIGN_IMAGE)


def images_config(r: Reader, doc: dict[str, Any], source: m.Source, name: str,
                  ns: str) -> m.ImagesConfig:
    kind = str(doc.get("kind"))
    mbsc = kind == m.MBSC_KIND
    r.obj(doc, "", ["apiVersion", "kind", "metadata", "spec", "status"])
    # An MBSC's spec needs `images` (no omitempty); a MIC's spec may be left out.
    body = r.obj(doc.get("spec", {}), "spec", _MBSC_SPEC if mbsc else _MIC_SPEC,
                 ["images"] if mbsc else [])
    images = tuple(_image(r, item, path, mbsc)
                   for path, item in r.items(body.get("images"), "spec.images"))
    policy = body.get("imagePullPolicy")
    return m.ImagesConfig(
        kind=kind, name=name, namespace=ns, source=source, images=images,
        image_repo_secret=r.ref(body.get("imageRepoSecret"), "spec.imageRepoSecret"),
        # An MBSC has no pull policy: its pods pull nothing KMM checks first.
        image_pull_policy="" if mbsc else "IfNotPresent" if policy is None
        else r.string(policy, "spec.imagePullPolicy"),
        push_built_image=r.boolean(body.get("pushBuiltImage"), "spec.pushBuiltImage"),
        image_rebuild_trigger_generation=r.integer(
            body.get("imageRebuildTriggerGeneration"), "spec.imageRebuildTriggerGeneration"),
        tolerations=spec_reader.tolerations(r, body.get("tolerations"), "spec.tolerations"),
    )


def _image(r: Reader, value: Any, path: str, mbsc: bool) -> m.ImageSpec:
    body = r.obj(value, path, [*_IMAGE, "action"] if mbsc else _IMAGE,
                 ["image", "kernelVersion", *(["action"] if mbsc else [])])
    action = ""
    if mbsc:
        action = r.string(body.get("action"), child(path, "action"))
        if body.get("action") is not None and action not in _ACTIONS:
            r.fail(child(path, "action"), f"unsupported value {action!r}: must be "
                   f"{' or '.join(_ACTIONS)}")
    dir_name = body.get("dirName")
    return m.ImageSpec(
        image=r.string(body.get("image"), child(path, "image")),
        kernel_version=r.string(body.get("kernelVersion"), child(path, "kernelVersion")),
        build=spec_reader.build(r, body.get("build"), child(path, "build")),
        sign=spec_reader.sign(r, body.get("sign"), child(path, "sign")),
        skip_wait_missing_image=r.boolean(body.get("skipWaitMissingImage"),
                                          child(path, "skipWaitMissingImage")),
        registry_tls=spec_reader.tls(r, body.get("registryTLS"), child(path, "registryTLS")),
        dir_name=m.DEFAULT_DIR_NAME if dir_name is None
        else r.string(dir_name, child(path, "dirName")),
        action=action,
    )
