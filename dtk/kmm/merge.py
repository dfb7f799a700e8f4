"""KMM's merge of a kernelMapping's build and sign over the container's.

From `internal/module/kernelmapper.go` and the build/sign helpers: the
mapping's Dockerfile ConfigMap replaces the container's, build args are
overridden by name (new names appended), build secrets are appended; for sign
the mapping's unsignedImage, key and cert override and filesToSign are
appended. Other optional fields come from the mapping when it sets them.
"""

from __future__ import annotations

from dataclasses import replace

from dtk.kmm import model as m


def merged_build(container: m.Build | None, mapping: m.Build | None) -> m.Build | None:
    if container is None or mapping is None:
        return mapping or container
    args = {a.name: a for a in container.build_args}
    for arg in mapping.build_args:
        args[arg.name] = arg  # dicts keep the container's order; new names go last
    return replace(
        container,
        dockerfile_configmap=mapping.dockerfile_configmap or container.dockerfile_configmap,
        build_args=tuple(args.values()),
        secrets=container.secrets + mapping.secrets,
        base_image_registry_tls=(mapping.base_image_registry_tls
                                 or container.base_image_registry_tls),
        kaniko_tag=mapping.kaniko_tag or container.kaniko_tag,
        selector=mapping.selector if mapping.selector is not None else container.selector,
    )


def merged_sign(container: m.Sign | None, mapping: m.Sign | None) -> m.Sign | None:
    if container is None or mapping is None:
        return mapping or container
    return m.Sign(
        key_secret=mapping.key_secret or container.key_secret,
        cert_secret=mapping.cert_secret or container.cert_secret,
        unsigned_image=mapping.unsigned_image or container.unsigned_image,
        unsigned_image_registry_tls=(mapping.unsigned_image_registry_tls
                                     or container.unsigned_image_registry_tls),
        files_to_sign=container.files_to_sign + mapping.files_to_sign,
    )
