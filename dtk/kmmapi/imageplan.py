"""What KMM does with a ModuleImagesConfig or a ModuleBuildSignConfig: pure, no tools.

A MIC names its images and kernels itself (KMM's module reconciler substituted them from
the Module), so there is no kernel mapping to choose: each image is planned with its own
build and sign, as the MIC reconciler hands it to the MBSC and the MBSC reconciler to
its build and sign pods (`internal/controllers/mic_reconciler.go`, `mbsc_reconciler.go`
at de3f8c9): KMM's build args with the config's name as MOD_NAME, the build selector
only, `filesToSign` and `unsignedImage` as written (nothing substituted any more).
"""

from __future__ import annotations

from dtk.kmmapi import model as m
from dtk.kmmapi.plan import (
    KernelPlan,
    Plan,
    Toolkit,
    cert_of,
    intermediate_image,
    local_toolkit,
    planned_build,
    planned_sign_for,
)


def plan_images(cfg: m.ImagesConfig, bundle: m.Bundle, *,
                toolkit: Toolkit = local_toolkit) -> Plan:
    """One KernelPlan per image of `cfg`, in its order."""
    kernels = []
    for n, spec in enumerate(cfg.images):
        sign = planned_sign_for(
            spec.sign, intermediate_image(cfg.name, cfg.namespace, spec.image)
            if spec.build else None, None,
            cert_of(bundle, cfg.namespace, spec.sign)) if spec.sign else None
        kernels.append(KernelPlan(
            kernel=spec.kernel_version,
            mapping_index=n,
            matched_by="image",
            pattern="",
            image=spec.image,
            registry_tls=spec.registry_tls or m.TLSOptions(),
            build=planned_build(cfg.name, cfg.namespace, spec.build, spec.kernel_version,
                                bundle=bundle, toolkit=toolkit) if spec.build else None,
            sign=sign,
            in_tree_modules_to_remove=(),
            build_image=(sign.unsigned_image if sign else spec.image) if spec.build else "",
            dir_name=spec.dir_name,
            skip_wait_missing_image=spec.skip_wait_missing_image,
            action=spec.action,
        ))
    return Plan(cfg.name, cfg.namespace, tuple(kernels), (), kind=cfg.kind,
                image_pull_policy=cfg.image_pull_policy,
                push_built_image=cfg.push_built_image)
