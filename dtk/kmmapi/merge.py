"""KMM's merge of a kernelMapping's build and sign over the container's.

As `getRelevantBuild` / `getRelevantSign` in KMM's `internal/module/kernelmapper.go`
do: when only one side has a build (sign), it is taken whole. When both do, the
container's is the base and the mapping may change only:

* build: the Dockerfile ConfigMap (replaced), the build args (overridden by name with
  KMM's `ApplyBuildArgOverrides`), the secrets (appended). `baseImageRegistryTLS`,
  `kanikoParams` and `selector` always stay the container's;
* sign: `unsignedImage` (when not empty), `keySecret` and `certSecret` (replaced),
  `filesToSign` (appended). `unsignedImageRegistryTLS` stays the container's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from dtk.kmmapi import model as m


def apply_overrides(args: Sequence[m.BuildArg],
                    overrides: Sequence[m.BuildArg]) -> tuple[m.BuildArg, ...]:
    """KMM's `ApplyBuildArgOverrides`: every arg whose name an override has takes the
    override (the last of that name); overrides no arg used are appended, sorted by name."""
    by_name = {o.name: o for o in overrides}
    out = [by_name.get(a.name, a) for a in args]
    used = {a.name for a in args}
    out += [by_name[name] for name in sorted(by_name) if name not in used]
    return tuple(out)


def merged_build(container: m.Build | None, mapping: m.Build | None) -> m.Build | None:
    if container is None or mapping is None:
        return mapping or container
    return replace(
        container,
        dockerfile_configmap=mapping.dockerfile_configmap or container.dockerfile_configmap,
        build_args=apply_overrides(container.build_args, mapping.build_args),
        secrets=container.secrets + mapping.secrets,
    )


def merged_sign(container: m.Sign | None, mapping: m.Sign | None) -> m.Sign | None:
    if container is None or mapping is None:
        return mapping or container
    return replace(
        container,
        key_secret=mapping.key_secret or container.key_secret,
        cert_secret=mapping.cert_secret or container.cert_secret,
        unsigned_image=mapping.unsigned_image or container.unsigned_image,
        files_to_sign=container.files_to_sign + mapping.files_to_sign,
    )
